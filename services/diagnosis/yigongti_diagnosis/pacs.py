"""The county PACS, seen from the diagnosis service: is the requested study there,
is it the requested one, what does it hold; and rendered previews for the workstation.

Over DICOMweb with the maintained `dicomweb-client` package:
- QIDO-RS finds the study by Study Instance UID and lists its series (modality,
  number of instances). `check_study` compares the PACS's Accession Number with
  the request's: a mismatch is refused (no one attaches another patient's
  study); a study the PACS does not have is `NOT_FOUND` (the service parks the
  request, then refuses it after the grace period).
- WADO-RS "rendered" gives a JPEG or PNG of a series (its first instance, as the
  server chooses) or of one instance; the service proxies it to the browser,
  which never talks to the PACS. Orthanc's DICOMweb plugin (1.7 in Debian 12)
  renders at study, series, instance and frame level. It rejects `viewport`
  as dicomweb-client encodes it (the comma becomes %2C), so previews come at the
  image's own size and the browser scales them.

dicomweb-client is synchronous (requests): every call runs in a worker thread
(`asyncio.to_thread`), bounded by the requests timeouts (connect, read) and an
overall deadline; its own retry loop is off, the service's parking is the retry.
A PACS that cannot be reached, times out or answers an error other than 404
raises `PacsUnavailable`: the caller retries later and never refuses a study
for it. Nothing here logs or returns the patient module the PACS answers with.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

log = logging.getLogger("yigongti.diagnosis.pacs")

T = TypeVar("T")

# Environment of the service (the stack and the test fixture set them).
URL_ENV = "PACS_DICOMWEB_URL"
USERNAME_ENV = "PACS_USERNAME"
PASSWORD_ENV = "PACS_PASSWORD"

# QIDO-RS return keys we ask for (PS3.18 table 6.7.1-2, 6.7.1-2a); the rest is not ours to read.
STUDY_FIELDS = ("AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedInstances")
SERIES_FIELDS = ("Modality", "SeriesNumber", "SeriesDescription", "NumberOfSeriesRelatedInstances")

PREVIEW_MEDIA_TYPES = ("image/jpeg", "image/png")
_MAGIC = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}


class PacsUnavailable(Exception):
    """The PACS could not answer (down, timed out, or an HTTP error other than 404).

    Transient from the service's point of view: try again later; never a refusal."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class _Missing(Exception):
    """The PACS answered 404."""


@dataclass(frozen=True)
class PacsSeries:
    series_uid: str
    modality: str | None
    instance_count: int
    number: int | None = None
    description: str | None = None


@dataclass(frozen=True)
class PacsStudy:
    study_uid: str
    accession: str | None
    series: tuple[PacsSeries, ...]

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities of its series, sorted, each once."""
        return tuple(sorted({s.modality for s in self.series if s.modality}))

    @property
    def instance_count(self) -> int:
        return sum(s.instance_count for s in self.series)


class StudyOutcome(StrEnum):
    FOUND = "found"
    ACCESSION_MISMATCH = "accession_mismatch"
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class StudyCheck:
    outcome: StudyOutcome
    study: PacsStudy | None = None  # what the PACS holds (found or mismatched)


@dataclass(frozen=True)
class Preview:
    content: bytes
    media_type: str  # "image/jpeg" or "image/png", from the bytes themselves


# --- pure: what the PACS answered -> what the service records -------------------------


def compare_accession(study: PacsStudy | None, accession: str) -> StudyCheck:
    """The request's study against the PACS's: missing, another accession, or found.

    Accession Numbers compare exactly after trimming DICOM padding; a study
    without one never matches."""
    if study is None:
        return StudyCheck(StudyOutcome.NOT_FOUND)
    # Blank after trimming (only padding or whitespace) is no accession at all.
    if not (study.accession or "").strip() or study.accession.strip() != accession.strip():
        return StudyCheck(StudyOutcome.ACCESSION_MISMATCH, study)
    return StudyCheck(StudyOutcome.FOUND, study)


def study_from_qido(
    study_uid: str, studies: Sequence[Mapping[str, Any]], series: Sequence[Mapping[str, Any]]
) -> PacsStudy | None:
    """A study from QIDO-RS answers (DICOM JSON): the study search and its series search.

    None when no answer is the study asked for (a server may ignore a filter)."""
    from pydicom import Dataset

    match = next(
        (ds for ds in map(Dataset.from_json, studies) if ds.get("StudyInstanceUID") == study_uid),
        None,
    )
    if match is None:
        return None
    listed = []
    for ds in map(Dataset.from_json, series):
        number = ds.get("SeriesNumber")
        listed.append(
            PacsSeries(
                series_uid=str(ds.SeriesInstanceUID),
                modality=str(ds.Modality) if ds.get("Modality") else None,
                instance_count=int(ds.get("NumberOfSeriesRelatedInstances") or 0),
                number=int(number) if number not in (None, "") else None,
                description=str(ds.SeriesDescription) if ds.get("SeriesDescription") else None,
            )
        )
    listed.sort(key=lambda s: (s.number is None, s.number or 0, s.series_uid))
    accession = match.get("AccessionNumber")
    return PacsStudy(study_uid, str(accession) if accession else None, tuple(listed))


def sniff_image(content: bytes) -> str | None:
    """The image type (PNG or JPEG) from the leading bytes; None for anything else."""
    for magic, media_type in _MAGIC.items():
        if content.startswith(magic):
            return media_type
    return None


# --- I/O: the client --------------------------------------------------------------


class PacsClient:
    """QIDO-RS look-ups and rendered previews on one DICOMweb server.

    `url` is the DICOMweb root (e.g. http://127.0.0.1:8042/dicom-web). Username
    and password, when given, go as HTTP basic auth (a county PACS needs them;
    the embedded Orthanc is loopback-only and has none)."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 10.0,
        deadline_s: float = 20.0,
    ):
        self.url = url.rstrip("/")
        self._auth = (username, password or "") if username else None
        self._timeout = (connect_timeout_s, read_timeout_s)
        self.deadline_s = deadline_s

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **kwargs: Any) -> PacsClient:
        url = environ.get(URL_ENV)
        if not url:
            raise RuntimeError(f"{URL_ENV} is not set: the diagnosis service needs the PACS")
        return cls(
            url,
            username=environ.get(USERNAME_ENV) or None,
            password=environ.get(PASSWORD_ENV),
            **kwargs,
        )

    async def check_study(self, study_uid: str, accession: str) -> StudyCheck:
        """Found, accession mismatch or not found. Raises PacsUnavailable (try again
        later) and ValueError for a malformed UID (dicomweb-client checks it)."""
        return compare_accession(await self.find_study(study_uid), accession)

    async def find_study(self, study_uid: str) -> PacsStudy | None:
        """The study with its series, or None when the PACS does not have it."""
        return await self._run(self._find_study, study_uid)

    async def series_preview(
        self, study_uid: str, series_uid: str, media_type: str = "image/jpeg"
    ) -> Preview | None:
        """A rendered image of the series (None when the PACS has no such series)."""
        return await self._run(self._rendered, media_type, study_uid, series_uid)

    async def instance_preview(
        self, study_uid: str, series_uid: str, instance_uid: str, media_type: str = "image/jpeg"
    ) -> Preview | None:
        """A rendered image of one instance (its first frame)."""
        return await self._run(self._rendered, media_type, study_uid, series_uid, instance_uid)

    # Blocking parts, run in a worker thread; each call has its own client and
    # session (requests.Session is not documented as thread-safe, and look-ups are rare).

    @contextmanager
    def _client(self) -> Iterator[Any]:
        from dicomweb_client.api import DICOMwebClient
        from dicomweb_client.session_utils import create_session, create_session_from_user_pass

        session = create_session_from_user_pass(*self._auth) if self._auth else create_session()
        try:
            client = DICOMwebClient(self.url, session=session, timeout=self._timeout)
            client.set_http_retry_params(retry=False)  # the service's parking is the retry
            with _pacs_errors():
                yield client
        finally:
            session.close()

    def _find_study(self, study_uid: str) -> PacsStudy | None:
        try:
            with self._client() as client:
                studies = client.search_for_studies(
                    search_filters={"StudyInstanceUID": study_uid}, fields=STUDY_FIELDS
                )
                if not studies:
                    return None
                series = client.search_for_series(
                    study_instance_uid=study_uid, fields=SERIES_FIELDS, get_remaining=True
                )
        except _Missing:
            return None
        return study_from_qido(study_uid, studies, series)

    def _rendered(
        self, media_type: str, study_uid: str, series_uid: str, instance_uid: str | None = None
    ) -> Preview | None:
        if media_type not in PREVIEW_MEDIA_TYPES:
            raise ValueError(f"previews are {' or '.join(PREVIEW_MEDIA_TYPES)}, not {media_type}")
        try:
            with self._client() as client:
                if instance_uid is None:
                    content = client.retrieve_series_rendered(
                        study_uid, series_uid, media_types=(media_type,)
                    )
                else:
                    content = client.retrieve_instance_rendered(
                        study_uid, series_uid, instance_uid, media_types=(media_type,)
                    )
        except _Missing:
            return None
        actual = sniff_image(content)
        if actual is None:  # never pass the browser something that is not an image
            raise PacsUnavailable(f"the PACS rendered {len(content)} bytes that are not an image")
        return Preview(content, actual)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            async with asyncio.timeout(self.deadline_s):
                return await asyncio.to_thread(fn, *args)
        except TimeoutError as exc:
            raise PacsUnavailable(
                f"the PACS did not answer within {self.deadline_s:.0f} s"
            ) from exc


@contextmanager
def _pacs_errors() -> Iterator[None]:
    """requests' errors as _Missing (HTTP 404) or PacsUnavailable (anything else)."""
    import requests

    try:
        yield
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 404:
            raise _Missing from exc
        raise PacsUnavailable(f"the PACS answered HTTP {status}", status) from exc
    except requests.RequestException as exc:
        raise PacsUnavailable(f"the PACS could not be reached: {type(exc).__name__}") from exc

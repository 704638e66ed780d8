"""Imaging studies for tests and the demo, made from pydicom's bundled samples.

pydicom ships `CT_small.dcm` (one 128x128 CT slice) and `MR_small.dcm` (one
64x64 MR slice) in its wheel, so this works offline. Every study gets fresh
Study, Series, SOP Instance and Frame of Reference UIDs (`generate_uid`) and
the Accession Number it is asked for, so tests never collide on a shared PACS.

There is no DX or US sample in pydicom: a DX study is a copy of the CT slice and
a US study a copy of the MR slice, relabelled (Modality and SOP Class changed,
pixels unchanged). `SampleStudy.relabelled_from` says so, and the Series
Description carries "RELABELLED <source>" for anyone who looks in the PACS.

    study = make_study("CT", "ACC123", instances_per_series=3)
    await upload_study(pacs_url, study)      # STOW-RS with dicomweb-client
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from dataclasses import dataclass

# DICOM PS3.4 Annex B.5 storage SOP classes.
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
DX_FOR_PRESENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"


@dataclass(frozen=True)
class _Sample:
    file: str  # pydicom test file name
    sop_class_uid: str
    relabelled_from: str | None = None  # the real modality of the pixels, when relabelled


SAMPLES: dict[str, _Sample] = {
    "CT": _Sample("CT_small.dcm", CT_IMAGE_STORAGE),
    "MR": _Sample("MR_small.dcm", MR_IMAGE_STORAGE),
    "DX": _Sample("CT_small.dcm", DX_FOR_PRESENTATION_STORAGE, relabelled_from="CT"),
    "US": _Sample("MR_small.dcm", US_IMAGE_STORAGE, relabelled_from="MR"),
}


@dataclass(frozen=True)
class SampleStudy:
    study_uid: str
    accession: str
    modality: str
    series_uids: tuple[str, ...]
    instance_uids: tuple[str, ...]  # every instance, series by series
    files: tuple[bytes, ...]  # Part 10 files, in the order of instance_uids
    relabelled_from: str | None  # "CT" or "MR" for the DX and US copies

    @property
    def instance_count(self) -> int:
        return len(self.files)


def make_study(
    modality: str,
    accession: str,
    *,
    series: int = 1,
    instances_per_series: int = 1,
    study_uid: str | None = None,
) -> SampleStudy:
    """A study of `series` x `instances_per_series` copies of the modality's sample slice,
    with fresh UIDs (or the given `study_uid`) and Accession Number `accession`."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    sample = SAMPLES.get(modality)
    if sample is None:
        raise ValueError(f"no sample for modality {modality!r}; known: {', '.join(SAMPLES)}")
    if series < 1 or instances_per_series < 1:
        raise ValueError("a study needs at least one series of one instance")
    path = get_testdata_file(sample.file)
    study_uid = study_uid or generate_uid()
    frame_of_reference_uid = generate_uid()
    series_uids: list[str] = []
    instance_uids: list[str] = []
    files: list[bytes] = []
    for series_number in range(1, series + 1):
        series_uid = generate_uid()
        series_uids.append(series_uid)
        for instance_number in range(1, instances_per_series + 1):
            ds = pydicom.dcmread(path)
            sop_uid = generate_uid()
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = sop_uid
            ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
            ds.SOPClassUID = sample.sop_class_uid
            ds.file_meta.MediaStorageSOPClassUID = sample.sop_class_uid
            ds.FrameOfReferenceUID = frame_of_reference_uid
            ds.Modality = modality
            ds.AccessionNumber = accession
            ds.SeriesNumber = series_number
            ds.InstanceNumber = instance_number
            label = f"yigongti sample {modality}"
            if sample.relabelled_from:
                label += f" RELABELLED {sample.relabelled_from}"
            ds.SeriesDescription = label
            out = io.BytesIO()
            ds.save_as(out, enforce_file_format=True)
            instance_uids.append(sop_uid)
            files.append(out.getvalue())
    return SampleStudy(
        study_uid=study_uid,
        accession=accession,
        modality=modality,
        series_uids=tuple(series_uids),
        instance_uids=tuple(instance_uids),
        files=tuple(files),
        relabelled_from=sample.relabelled_from,
    )


def store_files(
    dicomweb_url: str,
    files: Sequence[bytes],
    *,
    auth: tuple[str, str] | None = None,
    timeout_s: float = 30.0,
) -> None:
    """STOW-RS `files` (DICOM Part 10 bytes) to a DICOMweb server (blocking).

    Raises when the server refuses any instance (dicomweb-client raises on an
    HTTP error; a 200 with a FailedSOPSequence is checked here)."""
    import pydicom
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session, create_session_from_user_pass

    session = create_session_from_user_pass(*auth) if auth else create_session()
    client = DICOMwebClient(dicomweb_url, session=session, timeout=timeout_s)
    datasets = [pydicom.dcmread(io.BytesIO(data)) for data in files]
    response = client.store_instances(datasets)
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        raise RuntimeError(f"the PACS refused {len(failed)} of {len(datasets)} instances")


async def upload_study(
    dicomweb_url: str, study: SampleStudy, *, auth: tuple[str, str] | None = None
) -> None:
    """STOW-RS every instance of `study` (off the event loop)."""
    await asyncio.to_thread(store_files, dicomweb_url, study.files, auth=auth)

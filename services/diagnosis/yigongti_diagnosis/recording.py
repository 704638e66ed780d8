"""An uploaded 12-lead ECG recording: parsed, checked and kept in a compact form.

Only the waveform samples, the channel definitions (lead, scaling, filters), the
sample rate and the acquisition time are kept. The DICOM patient module (name,
IDs, birth date, address, comments) and everything else in the file (institution,
physicians, accession number, the cart's annotations) is never read into a
`Recording`: the DICOM reader asks pydicom for the few tags it keeps and nothing
else. Sex and age come with the request, not from the file.

Accepted formats (`parse(data, media_type)`):

``application/dicom``
    A DICOM Part 10 file of the 12-lead ECG or General ECG Waveform Storage SOP
    class. The multiplex group with the longest duration is used (so the RHYTHM
    group, not a cart's MEDIAN BEAT group). Channels are mapped to leads by their
    Channel Source code (DICOM PS3.16 CID 3001 "ECG Leads"): SCPECG codes
    ``5.6.3-9-N`` and the same leads as MDC codes ``2:N`` (N = 1 I, 2 II, 61 III,
    62 aVR, 63 aVL, 64 aVF, 3-8 V1-V6); a channel without a known code is mapped
    by its Code Meaning or Channel Label text ("Lead I (Einthoven)", "Lead aVR",
    "V1"). Samples are scaled by Channel Sensitivity x Correction Factor (+
    Channel Baseline) in the units of Channel Sensitivity Units (UCUM ``uV`` or
    ``mV``). The acquisition time is Acquisition DateTime, else Content Date +
    Time; without a UTC offset in the file it is taken as China Standard Time.

``text/csv`` (UTF-8; comma-separated; ``.`` as the decimal mark)::

    # format: yigongti-ecg-csv/1
    # sample_rate_hz: 500
    # units: uV
    # acquired_at: 2026-03-01T09:15:00+08:00
    # label: SYNTHETIC
    I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6
    12,-30,-42,9,27,-36,5,40,81,120,95,60
    ...

    Leading ``# key: value`` lines carry the metadata: ``sample_rate_hz``
    (required), ``units`` (required: ``mV``, ``uV`` or ``µV``), ``acquired_at``
    (optional, ISO 8601 with a UTC offset), ``label`` (optional; only
    ``SYNTHETIC``) and ``format`` (optional; only ``yigongti-ecg-csv/1``). Any
    other key is refused (``unknown_field``): a free-text line could carry a
    patient's name. The header row names each of the 12 standard leads exactly
    once, in any order (case does not matter; ``D1``/``D2``/``D3`` and a
    ``Lead `` prefix are accepted for I/II/III); every following row is one
    sample instant.

Checks (a failure raises `RecordingRefused` with a reason code and the field,
never a value from the upload): size <= `MAX_UPLOAD_BYTES`; the lead set is the
12 standard leads, each once; sample rate 250-2000 Hz; duration 8-60 s; units
mV or µV (µV converted to mV); every sample finite.

Stored form (`Recording.to_bytes` / `Recording.from_bytes`, a PostgreSQL
``bytea``): ``YGECG`` + version byte, a 4-byte little-endian header length, a
JSON header (rate, acquisition time, channels with their mV per count) and the
samples as little-endian int16, lead after lead. A DICOM recording stored as
16-bit signed integers with a zero baseline keeps its counts as they are
(lossless); anything else is quantised at 1 µV per count, coarser only when a
lead's peak exceeds ±32.767 mV. 10 s at 500 Hz is 120 kB; the largest accepted
(60 s at 2000 Hz) is 2.9 MB.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import struct
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Final

import numpy as np
import pydicom
from pydicom.valuerep import DA, DT, TM
from pydicom.waveforms.numpy_handler import multiplex_array

# The 12 standard leads in the order of the DICOM 12-lead IOD and of the SVG layout.
LEADS: Final = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# source: the issue's «e.g. 250–2000 Hz». AHA/ACCF/HRS 2007 Recommendations for the
# Standardization and Interpretation of the ECG, Part I (Kligfield et al.,
# Circulation 2007;115:1306) ask for ≥ 500 Hz for diagnosis; assumed: 250 Hz is
# still accepted so older township carts can send, 2000 Hz bounds the size.
MIN_SAMPLE_RATE_HZ: Final = 250.0
MAX_SAMPLE_RATE_HZ: Final = 2000.0
# source: a resting 12-lead ECG is a 10 s acquisition (the same AHA 2007 part I);
# assumed: 8 s allows a cart that trims the edges, 60 s a one-minute rhythm record.
MIN_DURATION_S: Final = 8.0
MAX_DURATION_S: Final = 60.0
# assumed: 60 s x 2000 Hz x 12 leads as CSV text is ~12 MB; 16 MiB leaves room
# for a DICOM file's other modules, and keeps one upload well inside a request.
MAX_UPLOAD_BYTES: Final = 16 * 1024 * 1024

CSV_FORMAT: Final = "yigongti-ecg-csv/1"
SYNTHETIC: Final = "SYNTHETIC"
CHINA_STANDARD_TIME: Final = timezone(timedelta(hours=8))  # official time in Xinjiang

MEDIA_DICOM: Final = "application/dicom"
MEDIA_CSV: Final = "text/csv"

# Reason codes (a refused upload names one, and the field it concerns).
TOO_LARGE: Final = "too_large"
UNSUPPORTED_FORMAT: Final = "unsupported_format"
UNREADABLE: Final = "unreadable"
MISSING_FIELD: Final = "missing_field"
UNKNOWN_FIELD: Final = "unknown_field"
MISSING_LEAD: Final = "missing_lead"
DUPLICATE_LEAD: Final = "duplicate_lead"
UNKNOWN_LEAD: Final = "unknown_lead"
UNSUPPORTED_UNITS: Final = "unsupported_units"
SAMPLE_RATE_OUT_OF_RANGE: Final = "sample_rate_out_of_range"
DURATION_OUT_OF_RANGE: Final = "duration_out_of_range"
BAD_VALUE: Final = "bad_value"
REASON_CODES: Final = (
    TOO_LARGE, UNSUPPORTED_FORMAT, UNREADABLE, MISSING_FIELD, UNKNOWN_FIELD, MISSING_LEAD,
    DUPLICATE_LEAD, UNKNOWN_LEAD, UNSUPPORTED_UNITS, SAMPLE_RATE_OUT_OF_RANGE,
    DURATION_OUT_OF_RANGE, BAD_VALUE,
)


class RecordingRefused(ValueError):
    """A recording that is not accepted: a reason code and the field it concerns.
    Neither ever holds a value taken from the upload."""

    def __init__(self, code: str, field: str) -> None:
        assert code in REASON_CODES, code
        super().__init__(f"{code}: {field}")
        self.code = code
        self.field = field


@dataclass(frozen=True)
class Channel:
    """One lead's channel definition: how a stored count becomes millivolts, and
    the acquisition filters when the source states them (ST segments read
    differently behind a 0.5 Hz high-pass than behind 0.05 Hz)."""

    lead: str
    mv_per_count: float
    filter_low_hz: float | None = None
    filter_high_hz: float | None = None
    notch_hz: float | None = None


@dataclass(frozen=True, eq=False)
class Recording:
    """The 12 leads of one ECG as int16 counts (shape 12 x n, in `LEADS` order)."""

    sample_rate_hz: float
    channels: tuple[Channel, ...]
    counts: np.ndarray = field(repr=False)
    acquired_at: datetime | None
    source: str  # "dicom" | "csv" | "synthetic": how it reached us
    label: str | None = None  # "SYNTHETIC" for a generated tracing, else None

    def __post_init__(self) -> None:
        if tuple(c.lead for c in self.channels) != LEADS:
            raise ValueError("channels must be the 12 standard leads in LEADS order")
        if self.counts.dtype != np.int16 or self.counts.ndim != 2 or self.counts.shape[0] != 12:
            raise ValueError("counts must be int16 with shape (12, n)")
        if self.label not in (None, SYNTHETIC):
            raise ValueError("label must be None or SYNTHETIC")
        self.counts.setflags(write=False)  # frozen means the samples too

    @property
    def n_samples(self) -> int:
        return int(self.counts.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sample_rate_hz

    def mv(self, lead: str) -> np.ndarray:
        i = LEADS.index(lead)
        return self.counts[i].astype(np.float64) * self.channels[i].mv_per_count

    def all_mv(self) -> np.ndarray:
        """All leads in millivolts, shape (12, n)."""
        scale = np.array([c.mv_per_count for c in self.channels])[:, None]
        return self.counts.astype(np.float64) * scale

    def metadata(self) -> dict:
        """Everything but the samples, JSON-serialisable (also the stored header)."""
        return {
            "sample_rate_hz": self.sample_rate_hz,
            "n_samples": self.n_samples,
            "acquired_at": self.acquired_at.isoformat() if self.acquired_at else None,
            "source": self.source,
            "label": self.label,
            "channels": [vars(c) for c in self.channels],
        }

    def to_bytes(self) -> bytes:
        header = json.dumps(self.metadata(), separators=(",", ":")).encode()
        samples = self.counts.astype("<i2", copy=False).tobytes(order="C")
        return _MAGIC + struct.pack("<I", len(header)) + header + samples

    @classmethod
    def from_bytes(cls, blob: bytes) -> Recording:
        if blob[:len(_MAGIC)] != _MAGIC:
            raise ValueError("not a stored recording")
        (n,) = struct.unpack_from("<I", blob, len(_MAGIC))
        start = len(_MAGIC) + 4
        meta = json.loads(blob[start:start + n])
        n_samples = meta["n_samples"]
        counts = np.frombuffer(blob, dtype="<i2", offset=start + n).astype(np.int16)
        if counts.size != 12 * n_samples:
            raise ValueError("stored recording is truncated")
        return cls(
            sample_rate_hz=meta["sample_rate_hz"],
            channels=tuple(Channel(**c) for c in meta["channels"]),
            counts=counts.reshape(12, n_samples),
            acquired_at=datetime.fromisoformat(meta["acquired_at"]) if meta["acquired_at"] else None,
            source=meta["source"], label=meta["label"],
        )


_MAGIC: Final = b"YGECG\x01"
_COUNT_MAX: Final = 32767
_FINEST_MV: Final = 0.001  # 1 µV per count


def from_mv(signals_mv: dict[str, np.ndarray], sample_rate_hz: float, *, source: str,
            acquired_at: datetime | None = None, label: str | None = None,
            filters: dict[str, tuple[float | None, float | None, float | None]] | None = None,
            ) -> Recording:
    """A checked `Recording` from float millivolts per lead (quantised at 1 µV)."""
    _check_lead_set(list(signals_mv))
    lengths = {len(v) for v in signals_mv.values()}
    if len(lengths) != 1:
        raise RecordingRefused(BAD_VALUE, "samples")
    counts = np.empty((12, lengths.pop()), dtype=np.int16)
    channels = []
    for i, lead in enumerate(LEADS):
        x = np.asarray(signals_mv[lead], dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise RecordingRefused(BAD_VALUE, "samples")
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        scale = max(_FINEST_MV, peak / _COUNT_MAX)
        counts[i] = np.clip(np.rint(x / scale), -_COUNT_MAX, _COUNT_MAX).astype(np.int16)
        low, high, notch = (filters or {}).get(lead, (None, None, None))
        channels.append(Channel(lead, scale, low, high, notch))
    recording = Recording(sample_rate_hz=float(sample_rate_hz), channels=tuple(channels),
                          counts=counts, acquired_at=acquired_at, source=source, label=label)
    check(recording)
    return recording


def check(recording: Recording) -> None:
    """The rate and duration limits (the lead set is checked while parsing)."""
    if not MIN_SAMPLE_RATE_HZ <= recording.sample_rate_hz <= MAX_SAMPLE_RATE_HZ:
        raise RecordingRefused(SAMPLE_RATE_OUT_OF_RANGE, "sample_rate_hz")
    if not MIN_DURATION_S <= recording.duration_s <= MAX_DURATION_S:
        raise RecordingRefused(DURATION_OUT_OF_RANGE, "duration_s")


def parse(data: bytes, media_type: str) -> Recording:
    """Parse an upload by its declared media type (the HTTP Content-Type)."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise RecordingRefused(TOO_LARGE, "size")
    kind = media_type.split(";")[0].strip().lower()
    if kind == MEDIA_DICOM:
        return parse_dicom(data)
    if kind == MEDIA_CSV:
        return parse_csv(data)
    raise RecordingRefused(UNSUPPORTED_FORMAT, "media_type")


# --- leads ----------------------------------------------------------------------

# DICOM PS3.16 CID 3001 "ECG Leads": the SCPECG code 5.6.3-9-N and MDC code 2:N
# name the same lead N.
_LEAD_BY_NUMBER: Final = {
    "1": "I", "2": "II", "61": "III", "62": "aVR", "63": "aVL", "64": "aVF",
    "3": "V1", "4": "V2", "5": "V3", "6": "V4", "7": "V5", "8": "V6",
}
_LEAD_BY_TEXT: Final = {lead.lower(): lead for lead in LEADS} | {"d1": "I", "d2": "II", "d3": "III"}


def lead_from_text(text: str) -> str | None:
    """A standard lead from a label such as "Lead I (Einthoven)", "lead avr", "V1"."""
    t = text.strip().lower()
    t = t.split("(")[0].strip()
    if t.startswith("lead "):
        t = t[5:].strip()
    return _LEAD_BY_TEXT.get(t)


def lead_from_code(scheme: str, code: str) -> str | None:
    scheme = scheme.strip().upper()
    if scheme == "SCPECG" and code.startswith("5.6.3-9-"):
        return _LEAD_BY_NUMBER.get(code.removeprefix("5.6.3-9-"))
    if scheme == "MDC" and code.startswith("2:"):
        return _LEAD_BY_NUMBER.get(code.removeprefix("2:"))
    return None


def _check_lead_set(leads: list[str | None]) -> None:
    if any(lead is None for lead in leads):
        raise RecordingRefused(UNKNOWN_LEAD, "leads")
    if len(set(leads)) != len(leads):
        raise RecordingRefused(DUPLICATE_LEAD, "leads")
    if set(leads) != set(LEADS):
        raise RecordingRefused(MISSING_LEAD, "leads")


def _mv_per_unit(unit: str) -> float:
    u = unit.strip()
    if u == "mV":
        return 1.0
    if u in ("uV", "µV", "μV"):  # micro sign and Greek mu
        return 0.001
    raise RecordingRefused(UNSUPPORTED_UNITS, "units")


# --- DICOM ------------------------------------------------------------------------

# pydicom logs and warns about malformed elements quoting their values: a file's
# values must never reach the service's logs, so its logger says nothing and its
# warnings are ignored while parsing.
logging.getLogger("pydicom").addFilter(lambda record: False)

_ECG_SOP_CLASSES: Final = {
    "1.2.840.10008.5.1.4.1.1.9.1.1": "12-lead ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.2": "General ECG Waveform Storage",
}
# Only these tags are read; the patient module is never parsed.
_DICOM_TAGS: Final = ["SOPClassUID", "AcquisitionDateTime", "ContentDate", "ContentTime",
                      "TimezoneOffsetFromUTC", "WaveformSequence"]


def parse_dicom(data: bytes) -> Recording:
    if len(data) > MAX_UPLOAD_BYTES:
        raise RecordingRefused(TOO_LARGE, "size")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _parse_dicom(data)


def _parse_dicom(data: bytes) -> Recording:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), specific_tags=_DICOM_TAGS)
    except Exception:  # hostile input: whatever pydicom trips over is "unreadable"
        raise RecordingRefused(UNREADABLE, "dicom") from None
    if str(ds.get("SOPClassUID", "")) not in _ECG_SOP_CLASSES:
        raise RecordingRefused(UNSUPPORTED_FORMAT, "sop_class")
    groups = ds.get("WaveformSequence") or []
    if not groups:
        raise RecordingRefused(MISSING_FIELD, "waveform")
    try:
        index = max(range(len(groups)), key=lambda i: (
            float(groups[i].NumberOfWaveformSamples) / float(groups[i].SamplingFrequency)))
        group = groups[index]
        rate = float(group.SamplingFrequency)
        raw = multiplex_array(ds, index, as_raw=True)  # (samples, channels)
        definitions = list(group.ChannelDefinitionSequence)
    except Exception:  # missing or inconsistent waveform attributes, unsupported encodings
        raise RecordingRefused(UNREADABLE, "waveform") from None
    if raw.ndim != 2 or raw.shape[1] != len(definitions):
        raise RecordingRefused(UNREADABLE, "waveform")

    leads = [_dicom_lead(ch) for ch in definitions]
    _check_lead_set(leads)
    if not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
        raise RecordingRefused(SAMPLE_RATE_OUT_OF_RANGE, "sample_rate_hz")
    if not MIN_DURATION_S <= raw.shape[0] / rate <= MAX_DURATION_S:
        raise RecordingRefused(DURATION_OUT_OF_RANGE, "duration_s")

    scales, baselines, filters = {}, {}, {}
    for lead, ch in zip(leads, definitions, strict=True):
        units = ch.get("ChannelSensitivityUnitsSequence")
        if ch.get("ChannelSensitivity") is None or not units:
            raise RecordingRefused(MISSING_FIELD, "channel_sensitivity")
        unit = _mv_per_unit(str(units[0].get("CodeValue", "")))
        correction = ch.get("ChannelSensitivityCorrectionFactor")
        scales[lead] = float(ch.ChannelSensitivity) * float(correction or 1.0) * unit
        baselines[lead] = float(ch.get("ChannelBaseline") or 0.0) * unit
        if not (math.isfinite(scales[lead]) and scales[lead] > 0 and math.isfinite(baselines[lead])):
            raise RecordingRefused(BAD_VALUE, "channel_sensitivity")
        filters[lead] = tuple(_float_or_none(ch.get(k)) for k in
                              ("FilterLowFrequency", "FilterHighFrequency", "NotchFilterFrequency"))

    acquired_at = _dicom_time(ds)
    column = {lead: i for i, lead in enumerate(leads)}
    if raw.dtype == np.int16 and not any(baselines.values()):
        # Lossless: keep the cart's counts and its scale.
        counts = np.ascontiguousarray(np.stack([raw[:, column[lead]] for lead in LEADS]))
        channels = tuple(Channel(lead, scales[lead], *filters[lead]) for lead in LEADS)
        return Recording(sample_rate_hz=rate, channels=channels, counts=counts,
                         acquired_at=acquired_at, source="dicom")
    mv = {lead: raw[:, column[lead]].astype(np.float64) * scales[lead] + baselines[lead]
          for lead in LEADS}
    return from_mv(mv, rate, source="dicom", acquired_at=acquired_at, filters=filters)


def _dicom_lead(channel) -> str | None:
    for item in channel.get("ChannelSourceSequence") or []:
        lead = lead_from_code(str(item.get("CodingSchemeDesignator", "")),
                              str(item.get("CodeValue", "")))
        if lead:
            return lead
        lead = lead_from_text(str(item.get("CodeMeaning", "")))
        if lead:
            return lead
    label = channel.get("ChannelLabel")
    return lead_from_text(str(label)) if label else None


def _float_or_none(value) -> float | None:
    try:
        return float(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _dicom_time(ds) -> datetime | None:
    try:
        if ds.get("AcquisitionDateTime"):
            when = DT(ds.AcquisitionDateTime)
        elif ds.get("ContentDate") and ds.get("ContentTime"):
            date, time = DA(ds.ContentDate), TM(ds.ContentTime)
            when = datetime.combine(date, time)
        else:
            return None
    except (ValueError, TypeError):
        raise RecordingRefused(BAD_VALUE, "acquired_at") from None
    if when.tzinfo is None:
        offset = ds.get("TimezoneOffsetFromUTC")
        when = when.replace(tzinfo=_offset(str(offset)) if offset else CHINA_STANDARD_TIME)
    return datetime.fromtimestamp(when.timestamp(), tz=when.tzinfo)  # a plain datetime


def _offset(text: str) -> timezone:
    # DICOM "+HHMM" / "-HHMM"
    try:
        sign = -1 if text[0] == "-" else 1
        return timezone(sign * timedelta(hours=int(text[1:3]), minutes=int(text[3:5])))
    except (ValueError, IndexError):
        raise RecordingRefused(BAD_VALUE, "acquired_at") from None


# --- CSV --------------------------------------------------------------------------

_CSV_KEYS: Final = {"format", "sample_rate_hz", "units", "acquired_at", "label"}


def parse_csv(data: bytes) -> Recording:
    if len(data) > MAX_UPLOAD_BYTES:
        raise RecordingRefused(TOO_LARGE, "size")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RecordingRefused(UNREADABLE, "csv") from None
    lines = text.splitlines()
    meta: dict[str, str] = {}
    n = 0
    while n < len(lines) and lines[n].startswith("#"):
        key, sep, value = lines[n][1:].partition(":")
        key = key.strip().lower()
        if not sep or key not in _CSV_KEYS:
            raise RecordingRefused(UNKNOWN_FIELD, "metadata")
        if key in meta:
            raise RecordingRefused(BAD_VALUE, key)
        meta[key] = value.strip()
        n += 1
    if "format" in meta and meta["format"] != CSV_FORMAT:
        raise RecordingRefused(UNSUPPORTED_FORMAT, "format")
    for key in ("sample_rate_hz", "units"):
        if key not in meta:
            raise RecordingRefused(MISSING_FIELD, key)
    try:
        rate = float(meta["sample_rate_hz"])
    except ValueError:
        raise RecordingRefused(BAD_VALUE, "sample_rate_hz") from None
    if not math.isfinite(rate) or not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
        raise RecordingRefused(SAMPLE_RATE_OUT_OF_RANGE, "sample_rate_hz")
    unit = _mv_per_unit(meta["units"])
    label = meta.get("label") or None
    if label not in (None, SYNTHETIC):
        raise RecordingRefused(BAD_VALUE, "label")
    acquired_at = None
    if meta.get("acquired_at"):
        try:
            acquired_at = datetime.fromisoformat(meta["acquired_at"])
        except ValueError:
            raise RecordingRefused(BAD_VALUE, "acquired_at") from None
        if acquired_at.tzinfo is None:
            raise RecordingRefused(BAD_VALUE, "acquired_at")

    if n >= len(lines):
        raise RecordingRefused(MISSING_FIELD, "leads")
    header = next(csv.reader([lines[n]]))
    leads = [lead_from_text(h) for h in header]
    _check_lead_set(leads)
    body = "\n".join(lines[n + 1:])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": refused below
            values = np.loadtxt(io.StringIO(body), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError:
        raise RecordingRefused(BAD_VALUE, "samples") from None
    if values.shape[0] == 0 or values.shape[1] != 12:
        raise RecordingRefused(BAD_VALUE, "samples")
    if not MIN_DURATION_S <= values.shape[0] / rate <= MAX_DURATION_S:
        raise RecordingRefused(DURATION_OUT_OF_RANGE, "duration_s")
    mv = {lead: values[:, i] * unit for i, lead in enumerate(leads)}
    return from_mv(mv, rate, source="csv", acquired_at=acquired_at, label=label)


def to_csv(recording: Recording) -> str:
    """The recording in the CSV format above, in µV (integers when lossless)."""
    out = io.StringIO()
    out.write(f"# format: {CSV_FORMAT}\n")
    rate = recording.sample_rate_hz
    out.write(f"# sample_rate_hz: {int(rate) if rate.is_integer() else rate}\n")
    out.write("# units: uV\n")
    if recording.acquired_at:
        out.write(f"# acquired_at: {recording.acquired_at.isoformat()}\n")
    if recording.label:
        out.write(f"# label: {recording.label}\n")
    out.write(",".join(LEADS) + "\n")
    uv = recording.all_mv().T * 1000.0
    np.savetxt(out, uv, delimiter=",", fmt="%.6g")
    return out.getvalue()

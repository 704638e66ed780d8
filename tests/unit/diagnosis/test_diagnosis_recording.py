"""Parsing, checking and storing an uploaded 12-lead ECG (recording.py)."""

from __future__ import annotations

import io
import json
import logging
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from yigongti_diagnosis import ecg_svg
from yigongti_diagnosis import recording as rec
from yigongti_diagnosis.recording import (
    LEADS,
    MAX_UPLOAD_BYTES,
    Channel,
    Recording,
    RecordingRefused,
    lead_from_code,
    lead_from_text,
    parse,
    parse_csv,
    parse_dicom,
    to_csv,
)

SAMPLE = get_testdata_file("waveform_ecg.dcm")
SAMPLE_BYTES = Path(SAMPLE).read_bytes()


def dicom_bytes(edit) -> bytes:
    """The sample file with `edit(dataset)` applied."""
    ds = pydicom.dcmread(io.BytesIO(SAMPLE_BYTES))
    edit(ds)
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def refused(fn, *args) -> RecordingRefused:
    with pytest.raises(RecordingRefused) as caught:
        fn(*args)
    return caught.value


def csv_text(rate="500", units="uV", header=",".join(LEADS), rows=5000, extra_meta="",
             value="10") -> bytes:
    lines = ["# format: yigongti-ecg-csv/1", f"# sample_rate_hz: {rate}", f"# units: {units}"]
    if extra_meta:
        lines.append(extra_meta)
    lines.append(header)
    lines += [",".join([value] * 12)] * rows
    return ("\n".join(lines) + "\n").encode()


# --- the DICOM sample -----------------------------------------------------------------

def test_sample_ships_inside_the_pydicom_wheel_so_no_network_is_needed():
    package_dir = Path(pydicom.__file__).parent
    assert Path(SAMPLE).is_relative_to(package_dir / "data" / "test_files")


def test_dicom_sample_is_12_leads_at_1000_hz_for_10_s_kept_lossless():
    recording = parse(SAMPLE_BYTES, "application/dicom")
    assert recording.sample_rate_hz == 1000.0
    assert recording.n_samples == 10000 and recording.duration_s == 10.0
    assert [c.lead for c in recording.channels] == list(LEADS)
    # 1.25 µV per count in the file, kept as counts (lossless)
    assert all(c.mv_per_count == pytest.approx(0.00125) for c in recording.channels)
    raw = pydicom.dcmread(SAMPLE).waveform_array(0)  # µV, channels in file order
    assert np.allclose(recording.all_mv().T, raw / 1000.0)
    assert recording.channels[1].filter_low_hz == 0.05
    assert recording.channels[1].filter_high_hz == 300.0


def test_dicom_acquisition_time_without_offset_is_china_standard_time():
    recording = parse(SAMPLE_BYTES, "application/dicom")
    assert recording.acquired_at == datetime(2013, 1, 25, 10, 59, 19,
                                             tzinfo=timezone(timedelta(hours=8)))


def test_dicom_offset_from_utc_is_honoured():
    def edit(ds):
        ds.TimezoneOffsetFromUTC = "+0600"
    recording = parse_dicom(dicom_bytes(edit))
    assert recording.acquired_at.utcoffset() == timedelta(hours=6)


def test_parsed_recording_carries_none_of_the_files_patient_or_visit_strings():
    ds = pydicom.dcmread(SAMPLE)
    secrets = {str(ds.get(k)) for k in (
        "PatientName", "PatientID", "PatientBirthDate", "PatientAge", "AccessionNumber",
        "AdmissionID", "InstitutionName", "ReferringPhysicianName", "RequestingPhysician",
        "StudyInstanceUID", "SOPInstanceUID", "StationName", "Manufacturer")}
    secrets = {s for s in secrets if len(s) >= 4 and s != "None"}
    assert {"Anonymous", "642341", "19710123", "03028041970546"} <= secrets  # the test can fail
    recording = parse(SAMPLE_BYTES, "application/dicom")
    forms = {
        "stored": recording.to_bytes().decode("latin-1"),
        "metadata": json.dumps(recording.metadata()),
        "repr": repr(recording),
        "csv": to_csv(recording),
        "svg": ecg_svg.render(recording),
        "attributes": repr(vars(recording)),
    }
    for name, text in forms.items():
        for secret in secrets:
            assert secret not in text, (name, secret)


# --- lead mapping ------------------------------------------------------------------

@pytest.mark.parametrize(("scheme", "code", "lead"), [
    ("SCPECG", "5.6.3-9-1", "I"), ("SCPECG", "5.6.3-9-2", "II"), ("SCPECG", "5.6.3-9-61", "III"),
    ("SCPECG", "5.6.3-9-62", "aVR"), ("SCPECG", "5.6.3-9-63", "aVL"),
    ("SCPECG", "5.6.3-9-64", "aVF"), ("SCPECG", "5.6.3-9-3", "V1"), ("SCPECG", "5.6.3-9-8", "V6"),
    ("MDC", "2:1", "I"), ("MDC", "2:62", "aVR"), ("MDC", "2:5", "V3"),
    ("SCPECG", "5.6.3-9-9", None),  # V7: not one of the 12
    ("LN", "5.6.3-9-1", None),
])
def test_dicom_channel_codes_map_to_the_standard_leads(scheme, code, lead):
    assert lead_from_code(scheme, code) == lead


@pytest.mark.parametrize(("text", "lead"), [
    ("Lead I (Einthoven)", "I"), ("Lead II", "II"), ("lead avr", "aVR"), ("AVF", "aVF"),
    ("V1", "V1"), (" v6 ", "V6"), ("D3", "III"), ("V7", None), ("Lead V4R", None), ("", None),
])
def test_lead_labels_map_to_the_standard_leads(text, lead):
    assert lead_from_text(text) == lead


def test_dicom_channel_without_a_known_code_is_mapped_by_its_meaning():
    def edit(ds):
        source = ds.WaveformSequence[0].ChannelDefinitionSequence[3].ChannelSourceSequence[0]
        source.CodingSchemeDesignator = "99LOCAL"
        source.CodeValue = "X"
        source.CodeMeaning = "Lead aVR"
    assert parse_dicom(dicom_bytes(edit)).n_samples == 10000


# --- refusals ------------------------------------------------------------------------

def _set_code(channel: int, code: str, meaning: str = "?"):
    def edit(ds):
        source = ds.WaveformSequence[0].ChannelDefinitionSequence[channel].ChannelSourceSequence[0]
        source.CodeValue = code
        source.CodeMeaning = meaning
    return edit


def _set(attr: str, value, channel: int | None = None):
    def edit(ds):
        target = ds.WaveformSequence[0]
        if channel is not None:
            target = target.ChannelDefinitionSequence[channel]
        setattr(target, attr, value)
    return edit


def _units(code: str):
    def edit(ds):
        ds.WaveformSequence[0].ChannelDefinitionSequence[5].ChannelSensitivityUnitsSequence[0] \
            .CodeValue = code
    return edit


def _sop(uid: str):
    def edit(ds):
        ds.SOPClassUID = uid
    return edit


@pytest.mark.parametrize(("edit", "code", "field"), [
    (_set_code(2, "5.6.3-9-2"), "duplicate_lead", "leads"),
    (_set_code(2, "5.6.3-9-9", "Lead V7"), "unknown_lead", "leads"),
    (_set("SamplingFrequency", "200"), "sample_rate_out_of_range", "sample_rate_hz"),
    (_set("SamplingFrequency", "4000"), "sample_rate_out_of_range", "sample_rate_hz"),
    (_set("SamplingFrequency", "1300"), "duration_out_of_range", "duration_s"),  # 7.7 s
    (_units("mm[Hg]"), "unsupported_units", "units"),
    (_sop("1.2.840.10008.5.1.4.1.1.9.2.1"), "unsupported_format", "sop_class"),  # haemodynamic
])
def test_bad_dicom_recordings_are_refused_with_a_reason(edit, code, field):
    error = refused(parse_dicom, dicom_bytes(edit))
    assert (error.code, error.field) == (code, field)


def test_dicom_of_exactly_8_s_is_accepted():
    assert parse_dicom(dicom_bytes(_set("SamplingFrequency", "1250"))).duration_s == 8.0


def test_dicom_with_a_lead_missing_is_refused():
    def edit(ds):
        group = ds.WaveformSequence[0]
        samples = pydicom.dcmread(io.BytesIO(SAMPLE_BYTES)).waveform_array(0)
        raw = np.rint(samples[:, :11] / 1.25).astype("<i2")
        group.ChannelDefinitionSequence = group.ChannelDefinitionSequence[:11]
        group.NumberOfWaveformChannels = 11
        group.WaveformData = raw.tobytes()
    error = refused(parse_dicom, dicom_bytes(edit))
    assert (error.code, error.field) == ("missing_lead", "leads")


def test_values_of_a_malformed_file_never_reach_the_logs_or_warnings(caplog):
    def edit(ds):
        ds.SOPClassUID = "ZHANG-SAN^650102"  # not a valid UI: pydicom would quote it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # writing it warns too; only reading counts
        data = dicom_bytes(edit)
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert refused(parse_dicom, data).code == "unsupported_format"
    assert "ZHANG" not in caplog.text and not caught


def test_not_dicom_is_unreadable_and_other_media_types_unsupported():
    assert refused(parse, b"hello, world" * 50, "application/dicom").code == "unreadable"
    assert refused(parse, SAMPLE_BYTES, "application/pdf").code == "unsupported_format"


def test_uploads_over_the_size_limit_are_refused_before_parsing():
    huge = b"\0" * (MAX_UPLOAD_BYTES + 1)
    for media in ("application/dicom", "text/csv"):
        error = refused(parse, huge, media)
        assert (error.code, error.field) == ("too_large", "size")


def test_dicom_in_millivolts_with_a_baseline_is_converted_to_mv():
    def edit(ds):
        for ch in ds.WaveformSequence[0].ChannelDefinitionSequence:
            ch.ChannelSensitivity = "0.00125"
            ch.ChannelSensitivityUnitsSequence[0].CodeValue = "mV"
            ch.ChannelBaseline = "0.5"
    converted = parse_dicom(dicom_bytes(edit))
    original = parse_dicom(SAMPLE_BYTES)
    assert np.allclose(converted.all_mv(), original.all_mv() + 0.5, atol=0.0006)


# --- CSV ------------------------------------------------------------------------------

def test_csv_round_trip_of_the_dicom_sample_keeps_samples_and_time():
    original = parse(SAMPLE_BYTES, "application/dicom")
    again = parse(to_csv(original).encode(), "text/csv; charset=utf-8")
    assert again.sample_rate_hz == 1000.0 and again.acquired_at == original.acquired_at
    assert np.max(np.abs(again.all_mv() - original.all_mv())) <= 0.0005 + 1e-9  # 1 µV steps


def test_csv_columns_in_any_order_and_case_are_mapped_to_leads():
    header = ",".join(lead.upper() for lead in reversed(LEADS))
    lines = csv_text(header=header, rows=0).decode().splitlines()
    rows = [",".join(str(12 - i) for i in range(12))] * 4000  # column k holds 12-k
    recording = parse_csv(("\n".join(lines + rows)).encode())
    assert recording.mv("I")[0] == pytest.approx(0.001)  # the last column, 1 µV
    assert recording.mv("V6")[0] == pytest.approx(0.012)


def test_csv_in_microvolts_and_millivolts_agree():
    in_uv = parse_csv(csv_text(units="µV", value="1500"))
    in_mv = parse_csv(csv_text(units="mV", value="1.5"))
    assert np.allclose(in_uv.all_mv(), 1.5) and np.allclose(in_mv.all_mv(), 1.5)


@pytest.mark.parametrize(("data", "code", "field"), [
    (csv_text(rate="249"), "sample_rate_out_of_range", "sample_rate_hz"),
    (csv_text(rate="2001"), "sample_rate_out_of_range", "sample_rate_hz"),
    (csv_text(rate="nan"), "sample_rate_out_of_range", "sample_rate_hz"),
    (csv_text(rate="fast"), "bad_value", "sample_rate_hz"),
    (csv_text(rows=3999), "duration_out_of_range", "duration_s"),  # 7.998 s
    (csv_text(rows=30001), "duration_out_of_range", "duration_s"),  # 60.002 s
    (csv_text(units="mmHg"), "unsupported_units", "units"),
    (csv_text(value="nan"), "bad_value", "samples"),
    (csv_text(value="1,5"), "bad_value", "samples"),
    (csv_text(header=",".join(LEADS[:11])), "missing_lead", "leads"),
    (csv_text(header=",".join(LEADS[:11] + ("V5",))), "duplicate_lead", "leads"),
    (csv_text(header=",".join(LEADS[:11] + ("V7",))), "unknown_lead", "leads"),
    (csv_text(extra_meta="# label: REAL"), "bad_value", "label"),
    (csv_text(extra_meta="# acquired_at: 2026-03-01T09:15:00"), "bad_value", "acquired_at"),
    (b"# units: uV\n" + b"I\n", "missing_field", "sample_rate_hz"),
    (b"\xff\xfe\x00", "unreadable", "csv"),
])
def test_bad_csv_recordings_are_refused_with_a_reason(data, code, field):
    error = refused(parse_csv, data)
    assert (error.code, error.field) == (code, field)


def test_csv_with_unknown_metadata_is_refused_without_echoing_it():
    error = refused(parse_csv, csv_text(extra_meta="# patient: ZHANG-SAN-650102"))
    assert (error.code, error.field) == ("unknown_field", "metadata")
    assert "ZHANG" not in str(error) and "650102" not in str(error)


def test_refusals_name_the_field_never_the_value():
    header = ",".join(LEADS[:11]) + ",ZHANG-SAN"
    error = refused(parse_csv, csv_text(header=header, rate="777"))
    assert "ZHANG" not in str(error) and "777" not in str(error)
    assert str(error) == "unknown_lead: leads"


# --- stored form ---------------------------------------------------------------------

def test_stored_form_is_compact():
    recording = parse(SAMPLE_BYTES, "application/dicom")
    blob = recording.to_bytes()
    assert 12 * 10000 * 2 < len(blob) < 12 * 10000 * 2 + 2000


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=400),
    rate=st.sampled_from([250.0, 500.0, 999.5, 1000.0, 2000.0]),
    scale=st.floats(min_value=1e-4, max_value=0.01, allow_nan=False),
    seed=st.integers(0, 2**32 - 1),
    minutes=st.one_of(st.none(), st.integers(-720, 840)),
    label=st.sampled_from([None, "SYNTHETIC"]),
)
def test_stored_form_round_trips(n, rate, scale, seed, minutes, label):
    counts = np.random.default_rng(seed).integers(-32767, 32767, size=(12, n), dtype=np.int16)
    when = None if minutes is None else datetime(2026, 3, 1, 9, 15, 0, 123000,
                                                 tzinfo=timezone(timedelta(minutes=minutes)))
    channels = tuple(Channel(lead, scale * (i + 1), 0.05 if i else None, 150.0, None)
                     for i, lead in enumerate(LEADS))
    original = Recording(sample_rate_hz=rate, channels=channels, counts=counts,
                         acquired_at=when, source="csv", label=label)
    again = Recording.from_bytes(original.to_bytes())
    assert np.array_equal(again.counts, original.counts) and again.counts.dtype == np.int16
    assert again.metadata() == original.metadata()
    assert again.acquired_at == original.acquired_at


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), amplitude=st.floats(0.01, 80.0))
def test_quantisation_error_is_at_most_half_a_step(seed, amplitude):
    signals = {lead: np.random.default_rng(seed + i).uniform(-amplitude, amplitude, 2000)
               for i, lead in enumerate(LEADS)}
    recording = rec.from_mv(signals, 250, source="csv")
    for lead, channel in zip(LEADS, recording.channels, strict=True):
        assert channel.mv_per_count >= 0.001
        assert np.max(np.abs(recording.mv(lead) - signals[lead])) <= channel.mv_per_count / 2 + 1e-12


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.tuples(st.integers(0, len(SAMPLE_BYTES) - 1), st.binary(min_size=1,
                                                                              max_size=8)),
                     min_size=1, max_size=4),
       truncate=st.one_of(st.none(), st.integers(0, len(SAMPLE_BYTES))))
def test_a_damaged_dicom_file_is_parsed_or_refused_never_crashes(cuts, truncate):
    data = bytearray(SAMPLE_BYTES)
    for at, junk in cuts:
        data[at:at + len(junk)] = junk
    if truncate is not None:
        data = data[:truncate]
    try:
        parse_dicom(bytes(data))
    except RecordingRefused as refusal:
        assert refusal.code in rec.REASON_CODES


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=400), header=st.booleans())
def test_arbitrary_csv_text_is_refused_with_a_reason_never_crashes(text, header):
    data = (csv_text(rows=0).decode() if header else "") + text
    with pytest.raises(RecordingRefused):
        parse_csv(data.encode())


def test_samples_of_a_recording_cannot_be_changed():
    recording = parse(SAMPLE_BYTES, "application/dicom")
    with pytest.raises(ValueError):
        recording.counts[0, 0] = 1


def test_a_truncated_stored_form_is_rejected():
    blob = parse(SAMPLE_BYTES, "application/dicom").to_bytes()
    with pytest.raises(ValueError):
        Recording.from_bytes(blob[:-2])
    with pytest.raises(ValueError):
        Recording.from_bytes(b"NOTECG" + blob[6:])

"""The ECG paper (ecg_svg.py), checked by its geometry."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from yigongti_diagnosis import ecg_svg
from yigongti_diagnosis import recording as rec

NS = {"s": "http://www.w3.org/2000/svg"}
PX = ecg_svg.PX_PER_MM


@pytest.fixture(scope="module")
def sample() -> rec.Recording:
    return rec.parse(Path(get_testdata_file("waveform_ecg.dcm")).read_bytes(), rec.MEDIA_DICOM)


@pytest.fixture(scope="module")
def svg(sample) -> ET.Element:
    return ET.fromstring(ecg_svg.render(sample))


def by_id(root: ET.Element, element_id: str) -> ET.Element:
    found = root.findall(f".//*[@id='{element_id}']")
    assert len(found) == 1, element_id
    return found[0]


def path_points(d: str) -> np.ndarray:
    """Absolute M/L/H/V path commands to (x, y) points."""
    points, x, y = [], 0.0, 0.0
    for command, args in re.findall(r"([MLHV])([^MLHV]*)", d):
        numbers = [float(v) for v in args.replace(",", " ").split()]
        if command in "ML":
            for i in range(0, len(numbers), 2):
                x, y = numbers[i], numbers[i + 1]
                points.append((x, y))
        elif command == "H":
            x = numbers[0]
            points.append((x, y))
        else:
            y = numbers[0]
            points.append((x, y))
    return np.array(points)


def test_root_states_scale_speed_and_gain(svg):
    assert svg.get("data-px-per-mm") == str(PX)
    assert (svg.get("data-mm-per-s"), svg.get("data-mm-per-mv")) == ("25", "10")
    assert svg.get("viewBox") == f"0 0 {svg.get('width')} {svg.get('height')}"  # 1 unit = 1 px


def test_grid_lines_lie_every_mm_and_the_major_ones_every_5_mm_at_one_px_per_mm(svg):
    grid = by_id(svg, "ecg-grid")
    for axis in ("x", "y"):
        minor, major = [], []
        for line in grid.iter("{http://www.w3.org/2000/svg}line"):
            a, b = float(line.get(f"{axis}1")), float(line.get(f"{axis}2"))
            if a != b:
                continue  # a line along this axis
            (major if line.get("class") == "ecg-grid-major" else minor).append(a)
        every = np.sort(np.array(minor + major))
        assert len(every) > 100
        assert np.allclose(np.diff(every), PX)  # 1 mm everywhere, no gap, no doubles
        assert np.allclose(np.diff(np.sort(major)), 5 * PX)
        assert np.allclose(np.mod(major, 5 * PX), 0)


def test_rhythm_strip_is_250_mm_for_10_s(svg, sample):
    frame = by_id(svg, "ecg-rhythm-frame")
    assert float(frame.get("width")) == pytest.approx(250 * PX)
    assert frame.get("data-seconds") == "10"
    strip = by_id(svg, "ecg-rhythm-II")
    xs = path_points(strip.get("d"))[:, 0]
    last_sample_s = (sample.n_samples - 1) / sample.sample_rate_hz
    assert xs.max() - xs.min() == pytest.approx(last_sample_s * 25 * PX, abs=0.02)
    assert xs.min() == pytest.approx(float(frame.get("x")))


def test_calibration_pulse_is_10_mm_tall_and_5_mm_wide(svg):
    pulses = svg.findall(".//*[@class='ecg-cal']")
    assert len(pulses) == 4
    for pulse in pulses:
        points = path_points(pulse.get("d"))
        assert np.ptp(points[:, 1]) == pytest.approx(10 * PX)
        top = points[points[:, 1] == points[:, 1].min()]
        assert np.ptp(top[:, 0]) == pytest.approx(5 * PX)  # 200 ms at 25 mm/s
        assert pulse.get("data-mv") == "1"


@pytest.mark.parametrize("element_id", ["ecg-rhythm-II", "ecg-lead-II"])
def test_lead_ii_is_drawn_as_tall_as_its_mv_range_times_10_mm(svg, sample, element_id):
    trace = by_id(svg, element_id)
    start, end = float(trace.get("data-start-s")), float(trace.get("data-end-s"))
    fs = sample.sample_rate_hz
    window = sample.mv("II")[int(round(start * fs)):int(round(end * fs))]
    drawn_mm = np.ptp(path_points(trace.get("d"))[:, 1]) / PX
    expected_mm = np.ptp(window) * 10
    assert drawn_mm == pytest.approx(expected_mm, rel=0.05)
    assert float(trace.get("data-mv-max")) - float(trace.get("data-mv-min")) == pytest.approx(
        np.ptp(window), abs=1e-3)


def test_the_3_by_4_layout_places_each_lead_in_its_column_and_row(svg):
    for row, leads in enumerate(ecg_svg.LAYOUT):
        for column, lead in enumerate(leads):
            trace = by_id(svg, f"ecg-lead-{lead}")
            assert trace.get("data-lead") == lead
            assert float(trace.get("data-start-s")) == pytest.approx(column * 2.5)
            xs = path_points(trace.get("d"))[:, 0]
            left = (ecg_svg.TRACE_LEFT_MM + column * 62.5) * PX
            assert xs.min() == pytest.approx(left) and xs.max() < left + 62.5 * PX
            baseline = float(trace.get("data-baseline-y"))
            assert baseline == pytest.approx(ecg_svg._baseline_mm(row) * PX)


def test_speed_gain_and_leads_are_labelled_in_ascii(svg, sample):
    assert by_id(svg, "ecg-speed").text == "25 mm/s"
    assert by_id(svg, "ecg-gain").text == "10 mm/mV"
    labels = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")
              if t.get("class") == "ecg-lead-label"]
    assert sorted(labels) == sorted([*rec.LEADS, "II"])
    assert ecg_svg.render(sample).isascii()
    assert not svg.findall(".//*[@id='ecg-synthetic']")


def test_ids_are_unique(sample):
    ids = re.findall(r' id="([^"]+)"', ecg_svg.render(sample))
    assert len(ids) == len(set(ids))


def test_a_shorter_recording_leaves_the_end_of_the_strip_empty(sample):
    short = rec.from_mv({lead: sample.mv(lead)[:8000] for lead in rec.LEADS}, 1000,
                        source="csv")
    root = ET.fromstring(ecg_svg.render(short))
    xs = path_points(by_id(root, "ecg-rhythm-II").get("d"))[:, 0]
    assert xs.max() - xs.min() == pytest.approx(7.999 * 25 * PX, abs=0.02)
    v4 = path_points(by_id(root, "ecg-lead-V4").get("d"))[:, 0]  # 7.5-10 s: 0.5 s exists
    assert v4.max() - v4.min() == pytest.approx(0.499 * 25 * PX, abs=0.02)
    assert float(by_id(root, "ecg-rhythm-frame").get("width")) == pytest.approx(250 * PX)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rate=st.sampled_from([250, 500, 1000, 2000]),
       amplitude=st.floats(0.05, 4.0))
def test_downsampling_never_loses_a_peak(seed, rate, amplitude):
    rng = np.random.default_rng(seed)
    n = rate * 10
    signals = {lead: rng.normal(0, amplitude / 4, n) for lead in rec.LEADS}
    signals["II"][rng.integers(n)] = amplitude * 3  # one spike, one sample wide
    recording = rec.from_mv(signals, rate, source="csv")
    root = ET.fromstring(ecg_svg.render(recording))
    drawn_mm = np.ptp(path_points(by_id(root, "ecg-rhythm-II").get("d"))[:, 1]) / PX
    assert drawn_mm == pytest.approx(np.ptp(recording.mv("II")) * 10, abs=0.02)

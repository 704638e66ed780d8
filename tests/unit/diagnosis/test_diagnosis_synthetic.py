"""The SYNTHETIC anterior STEMI tracing for the demo (synthetic.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from yigongti_diagnosis import ecg_svg
from yigongti_diagnosis.recording import LEADS, MEDIA_CSV, SYNTHETIC, parse, to_csv
from yigongti_diagnosis.synthetic import r_peak_samples, synthetic_stemi


@pytest.fixture(scope="module")
def tracing():
    return synthetic_stemi()


def st_at_j_mv(recording, lead: str) -> float:
    """Median over beats of the level 70 ms after R (past the J point) minus the
    PR segment 80 ms before R."""
    x, fs = recording.mv(lead), recording.sample_rate_hz
    before, after = int(0.08 * fs), int(0.07 * fs)
    rs = [r for r in r_peak_samples() if r - before >= 0 and r + after < x.size]
    return float(np.median([x[r + after] - x[r - before] for r in rs]))


def test_it_is_labelled_synthetic_everywhere_it_travels(tracing):
    assert tracing.label == SYNTHETIC and tracing.source == "synthetic"
    text = to_csv(tracing)
    assert "# label: SYNTHETIC" in text.splitlines()[:6]
    assert parse(text.encode(), MEDIA_CSV).label == SYNTHETIC
    assert ">SYNTHETIC</text>" in ecg_svg.render(tracing)
    assert tracing.metadata()["label"] == SYNTHETIC


def test_st_is_elevated_in_contiguous_anterior_leads_beyond_the_stemi_limits(tracing):
    st = {lead: st_at_j_mv(tracing, lead) for lead in LEADS}
    # domain-rules §4: V2-V3 >= 2.5 mm (men < 40, the strictest), other leads >= 1 mm
    assert st["V2"] >= 0.25 and st["V3"] >= 0.25 and st["V4"] >= 0.10
    # not everywhere: lateral V6 flat, inferior leads reciprocally depressed
    assert abs(st["V6"]) < 0.05
    assert st["III"] <= -0.10 and st["aVF"] <= -0.05


def test_limb_leads_obey_einthoven_and_goldberger(tracing):
    i, ii = tracing.mv("I"), tracing.mv("II")
    step = 0.002  # two 1 µV quantisation steps
    assert np.max(np.abs(tracing.mv("III") - (ii - i))) <= step
    assert np.max(np.abs(tracing.mv("aVR") + (i + ii) / 2)) <= step
    assert np.max(np.abs(tracing.mv("aVL") - (i - ii / 2))) <= step
    assert np.max(np.abs(tracing.mv("aVF") - (ii - i / 2))) <= step


def test_the_same_seed_gives_the_same_tracing_and_another_seed_another():
    a, b, c = synthetic_stemi(seed=1), synthetic_stemi(seed=1), synthetic_stemi(seed=2)
    assert np.array_equal(a.counts, b.counts)
    assert not np.array_equal(a.counts, c.counts)


def test_the_true_beats_are_at_the_requested_rate():
    beats = r_peak_samples(heart_rate_bpm=78, sample_rate_hz=500)
    assert 60 / np.mean(np.diff(beats) / 500) == pytest.approx(78, abs=2)


def test_it_needs_no_neurokit2():
    code = ("import sys; from yigongti_diagnosis.synthetic import synthetic_stemi; "
            "synthetic_stemi(); print('neurokit2' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "False"


def test_the_command_writes_a_csv_that_parses(tmp_path):
    out = tmp_path / "stemi.csv"
    subprocess.run([sys.executable, "-m", "yigongti_diagnosis.synthetic", str(out)],
                   check=True, capture_output=True, timeout=60)
    recording = parse(out.read_bytes(), MEDIA_CSV)
    assert recording.label == SYNTHETIC and recording.duration_s == 10.0

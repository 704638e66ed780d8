"""ECG measurements (measure.py, analysis.py): the cart's own figures for pydicom's
real 12-lead sample, the worker process, and the figures on known signals."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from yigongti_diagnosis import recording as rec
from yigongti_diagnosis.measure import QTC_FORMULA, Analyser, AnalysisFailed
from yigongti_diagnosis.synthetic import r_peak_samples, synthetic_stemi

SAMPLE = get_testdata_file("waveform_ecg.dcm")


def cart_figures() -> dict[str, float]:
    """The measurements the Mortara cart wrote into the file (Waveform Annotation
    Sequence): RR 982, QRS 75, QT 368, QTc 370 ms."""
    ds = pydicom.dcmread(SAMPLE)
    out = {}
    for item in ds.WaveformAnnotationSequence:
        if "ConceptNameCodeSequence" in item and "NumericValue" in item:
            out[item.ConceptNameCodeSequence[0].CodeMeaning] = float(item.NumericValue)
    return out


def sample_recording() -> rec.Recording:
    return rec.parse(Path(SAMPLE).read_bytes(), rec.MEDIA_DICOM)


@pytest.fixture(scope="module")
async def analyser():
    async with Analyser() as running:
        yield running


@pytest.mark.timeout(180)
async def test_waveform_ecg_agrees_with_the_carts_own_measurements(analyser):
    cart = cart_figures()
    assert (cart["QRS Duration"], cart["QTc Interval"], cart["RR Interval"]) == (75, 370, 982)
    cart_rate = 60000 / cart["RR Interval"]  # 61.1/min
    m = await analyser.measure(sample_recording())
    print(f"\nwaveform_ecg.dcm: rate {m.heart_rate_bpm}/min (cart {cart_rate:.1f}), "
          f"QRS {m.qrs_ms} ms (cart 75), QT {m.qt_ms} ms (cart {cart['QT Interval']:.0f}), "
          f"QTc {QTC_FORMULA} {m.qtc_ms} ms, Bazett {m.qtc_bazett_ms} ms (cart 370), "
          f"RR CV {m.rr_cv_percent} %, longest pause {m.longest_pause_s} s, "
          f"analysis {m.analysis_cpu_s} CPU s")
    assert abs(m.heart_rate_bpm - 61) <= 2
    assert abs(m.qrs_ms - 75) <= 20
    assert abs(m.qtc_ms - 370) <= 30
    assert m.longest_pause_s < 1.1 and m.rr_cv_percent < 5
    assert m.withheld == {} and m.beats == 10


@pytest.mark.timeout(180)
def test_the_service_process_never_imports_neurokit2():
    """A fresh interpreter (the test process itself may have imported neurokit2
    for other tests) measures through the Analyser and reports its sys.modules."""
    script = textwrap.dedent(f"""
        import asyncio, json, sys
        from pathlib import Path
        from yigongti_diagnosis import recording
        from yigongti_diagnosis.measure import Analyser

        async def main():
            data = Path({SAMPLE!r}).read_bytes()
            async with Analyser() as analyser:
                m = await analyser.measure(recording.parse(data, recording.MEDIA_DICOM))
                memory = await analyser.memory()
            print(json.dumps({{"heart_rate": m.heart_rate_bpm, "memory": vars(memory),
                              "neurokit2": "neurokit2" in sys.modules,
                              "analysis": "yigongti_diagnosis.analysis" in sys.modules}}))
        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=170, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    memory = result["memory"]
    print(f"\nRSS: service {memory['parent_rss_mib']} MiB (peak {memory['parent_peak_mib']}), "
          f"worker {memory['worker_rss_mib']} MiB (peak {memory['worker_peak_mib']})")
    assert result["heart_rate"] is not None  # the worker did measure
    assert result["neurokit2"] is False and result["analysis"] is False
    assert memory["worker_rss_mib"] > memory["parent_rss_mib"]  # neurokit2 lives there


@pytest.mark.timeout(180)
async def test_a_worker_over_its_time_is_killed_and_the_next_task_gets_a_fresh_one():
    analyser = Analyser(timeout_s=0.01)  # the warm-up import alone takes seconds
    try:
        with pytest.raises(AnalysisFailed) as failed:
            await analyser.start()
        assert failed.value.reason == "timeout"
        analyser._timeout_s = 120
        m = await analyser.measure(sample_recording())
        assert abs(m.heart_rate_bpm - 61) <= 2
    finally:
        await analyser.close()


# --- the method on known signals (in this process: analysis imports neurokit2) --------

def _resampled(recording: rec.Recording, rate: int) -> rec.Recording:
    from scipy.signal import resample_poly

    mv = resample_poly(recording.all_mv(), rate, int(recording.sample_rate_hz), axis=1)
    return rec.from_mv(dict(zip(rec.LEADS, mv, strict=True)), rate, source="csv")


@pytest.mark.parametrize("rate", [250, 500, 2000])
def test_figures_hardly_change_with_the_sample_rate(rate):
    from yigongti_diagnosis import analysis

    at_1000 = analysis.measure(sample_recording())
    other = analysis.measure(_resampled(sample_recording(), rate))
    assert abs(other.heart_rate_bpm - at_1000.heart_rate_bpm) <= 0.5
    assert abs(other.qrs_ms - at_1000.qrs_ms) <= 8  # 2 samples at 250 Hz
    assert abs(other.qtc_ms - at_1000.qtc_ms) <= 10


@pytest.mark.parametrize("rate_bpm", [40, 78, 150])
def test_heart_rate_of_a_synthetic_tracing_is_its_true_rate(rate_bpm):
    from yigongti_diagnosis import analysis

    truth = r_peak_samples(heart_rate_bpm=rate_bpm)
    true_rate = 60 / float(np.mean(np.diff(truth))) * 500
    m = analysis.measure(synthetic_stemi(heart_rate_bpm=rate_bpm))
    assert abs(m.heart_rate_bpm - true_rate) <= 1
    assert m.beats in (truth.size - 1, truth.size)


def test_a_flat_stretch_of_4_s_is_measured_as_a_pause():
    from yigongti_diagnosis import analysis

    recording = sample_recording()
    mv = recording.all_mv()
    mv[:, 3000:7000] = 0.0  # beats at 3.49, 4.48, 5.47 and 6.44 s removed
    paused = rec.from_mv(dict(zip(rec.LEADS, mv, strict=True)), 1000, source="csv")
    m = analysis.measure(paused)
    assert 4.0 <= m.longest_pause_s <= 5.0


def test_a_flat_recording_is_one_long_pause_and_withholds_the_rest():
    from yigongti_diagnosis import analysis

    flat = rec.from_mv({lead: np.zeros(5000) for lead in rec.LEADS}, 500, source="csv")
    m = analysis.measure(flat)
    assert m.longest_pause_s == pytest.approx(10.0)
    assert m.heart_rate_bpm is None and m.qrs_ms is None and m.qtc_ms is None
    assert m.withheld["heart_rate_bpm"] == "too_few_beats"


def test_every_other_beat_removed_halves_the_rate_below_the_critical_35():
    from yigongti_diagnosis import analysis
    from yigongti_diagnosis.ecg_limits import breaches

    recording = sample_recording()
    mv = recording.all_mv()
    level = np.median(mv, axis=1, keepdims=True)
    for r in (1524, 3487, 5465, 7442, 9368):  # the 2nd, 4th, … R peaks of the sample
        mv[:, r - 300:r + 450] = level  # P to T end replaced by the baseline
    slow = rec.from_mv(dict(zip(rec.LEADS, mv, strict=True)), 1000, source="csv")
    m = analysis.measure(slow)
    assert abs(m.heart_rate_bpm - 30.3) <= 1 and m.beats == 5
    assert [b.code for b in breaches(m)] == ["ventricular_rate_below_35"]


@pytest.mark.parametrize(("rate_bpm", "codes"), [
    (190, ["rate_180_or_faster"]),
    (240, ["rate_230_or_faster", "rate_180_or_faster"]),
    (280, ["rate_230_or_faster", "rate_180_or_faster"]),
])
def test_fast_rates_up_to_300_are_measured_and_breach_their_limits(rate_bpm, codes):
    """neurokit2's default 0.3 s refractory time would halve any rate over 200/min."""
    from yigongti_diagnosis import analysis
    from yigongti_diagnosis.ecg_limits import breaches

    m = analysis.measure(synthetic_stemi(heart_rate_bpm=rate_bpm))
    assert abs(m.heart_rate_bpm - rate_bpm) <= 3
    assert [b.code for b in breaches(m)] == codes


def test_tall_t_waves_in_one_or_two_leads_do_not_double_the_rate():
    from yigongti_diagnosis import analysis

    recording = sample_recording()  # V3 and V4 have T waves of 0.8 mV
    mv = recording.all_mv()
    mv[rec.LEADS.index("II")] = 0.0  # the usual rhythm lead is off
    m = analysis.measure(rec.from_mv(dict(zip(rec.LEADS, mv, strict=True)), 1000,
                                     source="csv"))
    assert m.beats == 10 and abs(m.heart_rate_bpm - 61) <= 2  # a vote by count gave 125

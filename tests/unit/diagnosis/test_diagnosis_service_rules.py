"""The diagnosis service's pure rules: triage, the escalation ladder, its
reason codes (every one it refuses with is documented), its console script."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from yigongti_contracts.common import PLATFORM_REJECTION_REASONS
from yigongti_contracts.diagnosis.codes import Priority
from yigongti_contracts.diagnosis.rejections import REASONS
from yigongti_diagnosis import conclusions, critical, triage

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
SERVICE = Path(__file__).resolve().parents[3] / "services/diagnosis/yigongti_diagnosis"


def _p(indications, onset=None, clinician=None, measurements=None):
    return triage.priority_of(indications=indications, symptom_onset=onset,
                              clinician_priority=clinician, requested_at=NOW,
                              measurements=measurements)


@pytest.mark.parametrize(("indications", "onset", "clinician", "expected"), [
    (("R07.4",), NOW - timedelta(hours=11), None, (Priority.stat, ("chest_pain_under_12h",))),
    (("R07.4",), NOW - timedelta(hours=12), None, (Priority.urgent, ("chest_pain",))),
    (("R07.4",), None, None, (Priority.urgent, ("chest_pain",))),
    (("I63.9",), None, None, (Priority.stat, ("suspected_stroke",))),
    (("G45",), None, None, (Priority.stat, ("suspected_stroke",))),
    (("R55",), None, None, (Priority.urgent, ("urgent_indication",))),
    (("Z00.0",), None, None, (Priority.routine, ())),
    (("Z00.0",), None, Priority.stat, (Priority.stat, ("clinician_stat",))),
    # The clinician's priority is never lowered by the rules, nor the rules' by it.
    (("I63.9",), None, Priority.routine, (Priority.stat, ("suspected_stroke",))),
])
def test_triage(indications, onset, clinician, expected):
    assert _p(indications, onset, clinician) == expected


def test_a_measurement_beyond_a_limit_raises_and_never_lowers():
    slow = {"heart_rate_bpm": 30.0, "longest_pause_s": 2.0}
    assert _p(("Z00.0",), measurements=slow) == (Priority.stat,
                                                  ("ecg_ventricular_rate_below_35",))
    normal = {"heart_rate_bpm": 61.0, "longest_pause_s": 1.0}
    assert _p(("I63.9",), measurements=normal)[0] is Priority.stat
    assert _p(("Z00.0",), measurements=normal)[0] is Priority.routine


def test_due_times_and_lease_are_data():
    assert triage.due_after("652325-E01", Priority.stat) == timedelta(minutes=10)
    assert triage.due_after("652325-E01", Priority.urgent) == timedelta(minutes=30)
    assert triage.due_after("652325-E01", Priority.routine) == timedelta(hours=24)
    assert triage.lease() == timedelta(minutes=15)


def test_the_ladder_then_repeats_its_last_step():
    assert [critical.step(n)[0] for n in range(1, 6)] == [
        "requesting_clinic", "clinic_on_call_backup", "centre_supervisor",
        "centre_supervisor", "centre_supervisor"]
    assert critical.ack_within() == timedelta(minutes=10)


def test_conclusion_lists_hold_stemi_by_territory_af_avblock_vt_vf_normal():
    ecg = conclusions.codes_for("ECG")
    for code in ("I21.0", "I21.1", "I21.2", "I48", "I44.2", "I47.2", "I49.0", "ECG.NORMAL"):
        assert code in ecg and ecg[code]["source"]
    with pytest.raises(conclusions.UnknownConclusion):
        conclusions.check("CT", ["I21.0"])


def test_every_reason_the_service_refuses_with_is_documented():
    used = set()
    for path in SERVICE.glob("*.py"):
        used |= set(re.findall(r'Rejection\(\s*"([a-z_]+)"', path.read_text()))
    assert used, "no Rejection found"
    assert set(REASONS) == used - PLATFORM_REJECTION_REASONS
    assert all(text.endswith(".") for text in REASONS.values())


def test_help_works_without_starting_anything():
    out = subprocess.run([sys.executable, "-m", "yigongti_diagnosis.app", "--help"],
                         capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin"})
    assert out.returncode == 0 and "DATABASE_URL" in out.stdout


def test_the_service_process_never_imports_neurokit2():
    """Its ~200 MB stay in the analysis worker (measure.py)."""
    code = ("import sys, yigongti_diagnosis.app, yigongti_diagnosis.api; "
            "assert 'neurokit2' not in sys.modules, 'imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-500:]

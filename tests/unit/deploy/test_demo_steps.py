"""The demo's bookkeeping, without a stack: a step that does not reach its
state fails naming the step; the chest-pain-centre measures come from the
events' times only and say so when one is missing; the breakdown prints
every payer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from yigongti_deploy import demo
from yigongti_deploy.demo_journey import Journey, StepFailed, Timeline
from yigongti_deploy.demo_report import measures, step_times
from yigongti_deploy.demo_settle import breakdown


def _journey() -> Journey:
    return Journey(stack=SimpleNamespace(keys=None), events=SimpleNamespace(seen=[]),
                   timeline=Timeline())


async def test_a_failing_step_is_named_and_timed():
    j = _journey()
    async with j.step(1, "first"):
        pass
    with pytest.raises(StepFailed, match=r"step 2 \(second\): no referral\.opened\.v1"):
        async with j.step(2, "second"):
            raise StepFailed("no referral.opened.v1")
    first, second = j.timeline.steps
    assert first.failed is None and first.ms is not None
    assert second.failed == "no referral.opened.v1"
    assert "FAILED: no referral.opened.v1" in step_times(j)[1]


def test_the_steps_are_the_seven_of_the_journey_in_order():
    assert [n for n, _, _ in demo.STEPS] == list(range(1, 8))


def test_measures_come_from_the_events_and_say_when_one_is_missing():
    j = _journey()
    t0 = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
    j.facts.update(first_medical_contact_at=t0, ecg_requested_at=t0 + timedelta(minutes=7),
                   diagnosed_at=t0 + timedelta(minutes=12),
                   finding_raised_at=t0 + timedelta(minutes=12),
                   suggested_at=t0 + timedelta(minutes=12, milliseconds=250))
    lines = measures(j)
    assert "420.0 s" in lines[0] and "300.0 s" in lines[1] and "250 ms" in lines[2]
    assert "not recorded" in lines[3]  # no PatientReceived: no door-in
    assert not any("balloon" in line for line in lines)


def test_the_breakdown_prints_every_payer():
    settlement = {"settlement_id": "S-1", "scheme": "resident", "assistance_category": "low_income",
                  "policy_version": "p1", "total": "100.00", "basic": "40.00",
                  "critical_illness": "0.00", "large_amount_subsidy": "0.00",
                  "assistance": "30.00", "out_of_pocket": "30.00", "explanation": "a\nb"}
    text = "\n".join(breakdown(settlement))
    for part in ("100.00", "40.00", "30.00", "the patient pays", "medical assistance"):
        assert part in text
    assert text.endswith("  a\n  b")

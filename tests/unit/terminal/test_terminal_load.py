"""The load generator's pure parts: the open-loop schedule and the tally that
matches answers to sent records (load.py; the Kafka side is in
tests/integration/terminal/test_terminal_load.py)."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yigongti_contracts.lab.v1 import LabOrderPlaced, SpecimenCollected, SpecimenDispatched
from yigongti_terminal.load import (
    BAD_TEST,
    Clinic,
    Schedule,
    Tally,
    lab_clinics,
    make_clinics,
    percentile,
    planned,
    spread,
)

REJECTED = "yigongti.intake.rejected.v1"


@pytest.fixture(scope="module")
def clinics() -> list[Clinic]:
    return make_clinics(3, prefix="t-load")


def test_clinics_are_lab_served_institutions_each_with_its_own_key():
    many = make_clinics(20, prefix="t-load")
    served = set(lab_clinics())
    assert {c.institution_id for c in many} <= served
    assert len({c.terminal_id for c in many}) == 20
    assert len({c.signer.public_key_b64 for c in many}) == 20
    assert len({c.institution_id for c in many}) == min(20, len(served))


@pytest.mark.parametrize(("rate", "seconds", "total"), [
    (10, 2, 20), (0.5, 3, 1), (3, 0.1, 0), (100, 0.3, 30), (7, 1 / 7 * 3, 3)])
def test_an_open_loop_plans_rate_times_seconds_records(rate, seconds, total):
    assert planned(rate, seconds) == total


def test_slots_are_due_at_the_rate_whatever_the_answers(clinics):
    schedule = Schedule(clinics, rate=40, seconds=2)
    assert schedule.total == 80
    dues = [schedule.due(n) for n in range(schedule.total)]
    assert dues[0] == 0 and math.isclose(dues[-1], 79 / 40)
    assert all(math.isclose(b - a, 1 / 40) for a, b in zip(dues, dues[1:], strict=False))


def test_slots_go_round_the_clinics_each_sending_its_journeys_in_order(clinics):
    schedule = Schedule(clinics, rate=50, seconds=2)
    records = [schedule.record(n) for n in range(schedule.total)]
    per_clinic = Counter(r.clinic.terminal_id for r in records)
    assert max(per_clinic.values()) - min(per_clinic.values()) <= 1
    for clinic in clinics:
        own = [r.event for r in records if r.clinic is clinic]
        # order, one collection per tube, dispatch: journeys follow each other whole
        i = 0
        while i < len(own):
            order = own[i]
            assert isinstance(order, LabOrderPlaced)
            assert order.ordering_institution == clinic.institution_id
            rest = own[i + 1:]
            tubes = []
            while rest and isinstance(rest[0], SpecimenCollected):
                tubes.append(rest.pop(0))
            assert all(t.order_id == order.order_id for t in tubes)
            if rest:
                dispatch = rest[0]
                assert isinstance(dispatch, SpecimenDispatched)
                assert dispatch.barcodes == tuple(t.barcode for t in tubes)
            i += 2 + len(tubes)
    orders = [r.event for r in records if isinstance(r.event, LabOrderPlaced)]
    assert len({o.patient_ref for o in orders}) == len(orders)  # a new patient each time


def test_bad_records_are_spread_and_each_is_an_order_the_lab_refuses(clinics):
    schedule = Schedule(clinics, rate=20, seconds=2, bad=3)
    assert schedule.bad_slots == {10, 20, 30}
    bad = [schedule.record(n).event for n in sorted(schedule.bad_slots)]
    assert all(isinstance(e, LabOrderPlaced) and e.tests[0].code == BAD_TEST for e in bad)


@given(st.integers(0, 500), st.integers(0, 50))
def test_spread_slots_are_distinct_inside_the_run_and_never_the_first(total, count):
    slots = spread(total, count)
    assert len(slots) == min(count, max(0, total - 1))
    assert all(0 < s < total for s in slots)


def _sent(tally: Tally, schedule: Schedule, n: int, at: float):
    item = schedule.record(n).captured(n)
    tally.expect(item, at)
    return item, json.loads(item.value)


def test_each_record_is_answered_by_its_own_event_once(clinics):
    schedule, tally = Schedule(clinics, rate=10, seconds=1), Tally()
    order, o = _sent(tally, schedule, 0, 1.0)
    assert tally.sent == 1 and tally.open == 1
    assert tally.seen("yigongti.lab.order.accepted.v1", {"order_id": "someone-else"}, 1.1) is None
    assert tally.seen("yigongti.lab.order.accepted.v1", {"order_id": o["order_id"]},
                      1.25) == order.ce_id
    assert tally.seen("yigongti.lab.order.accepted.v1", {"order_id": o["order_id"]},
                      1.5) is None  # counted once
    # another event of the same order does not answer it
    assert tally.seen("yigongti.lab.specimen.received.v1", {"order_id": o["order_id"]},
                      1.6) is None
    assert (tally.answered, tally.open, tally.latencies) == (1, 0, [0.25])


def test_a_refusal_is_counted_by_reason_and_a_later_event_does_not_answer_it(clinics):
    schedule, tally = Schedule(clinics, rate=10, seconds=1, bad=0), Tally()
    order, o = _sent(tally, schedule, 0, 2.0)
    collect, c = _sent(tally, schedule, 3, 2.0)  # slot 3: clinic 0's first tube
    assert c["order_id"] == o["order_id"]
    assert tally.seen(REJECTED, {"rejected_id": order.ce_id, "reason": "unknown_test"},
                      2.5) == order.ce_id
    assert tally.seen(REJECTED, {"rejected_id": "not-ours", "reason": "x"}, 2.5) is None
    assert tally.seen("yigongti.lab.order.accepted.v1", {"order_id": o["order_id"]},
                      2.6) is None
    assert tally.seen("yigongti.lab.specimen.collection_recorded.v1",
                      {"order_id": c["order_id"], "barcode": c["barcode"]}, 3.0) == collect.ce_id
    assert tally.refused == Counter(unknown_test=1) and tally.answered == 1 and tally.open == 0


def test_a_send_the_broker_never_took_is_not_counted_sent(clinics):
    schedule, tally = Schedule(clinics, rate=10, seconds=1), Tally()
    item, _ = _sent(tally, schedule, 0, 0.0)
    tally.failed(item, "KafkaTimeoutError")
    assert (tally.sent, tally.open, tally.send_failed) == (0, 0, Counter(KafkaTimeoutError=1))


def test_figures_give_counts_rate_and_percentiles(clinics):
    schedule, tally = Schedule(clinics, rate=100, seconds=1), Tally()
    items = [_sent(tally, schedule, n, 0.0) for n in range(100)]
    for n, (item, data) in enumerate(items):
        if n == 50:
            tally.seen(REJECTED, {"rejected_id": item.ce_id, "reason": "schema_violation"},
                       0.5)
        elif n < 99:  # the last one is never answered: lost
            answer, name = {"yigongti.lab.order.placed.v1": ("order.accepted", "order_id"),
                            "yigongti.lab.specimen.collected.v1":
                                ("specimen.collection_recorded", "barcode"),
                            "yigongti.lab.specimen.dispatched.v1":
                                ("specimen.in_transit", "shipment_id")}[item.ce_type]
            tally.seen(f"yigongti.lab.{answer}.v1", {name: data[name]}, (n + 1) / 1000)
    figures = tally.figures(2.0)
    assert figures["sent"] == 100 and figures["answered"] == 98 and figures["refused"] == 1
    assert figures["refused_by_reason"] == {"schema_violation": 1} and figures["lost"] == 1
    assert figures["achieved_per_s"] == 50.0
    assert figures["p50_ms"] == 50.0 and figures["p99_ms"] == 500.0


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99
    assert percentile([3.0], 99) == 3.0 and math.isnan(percentile([], 50))


def test_schedule_refuses_nonsense(clinics):
    with pytest.raises(ValueError):
        Schedule([], rate=1, seconds=1)
    with pytest.raises(ValueError):
        Schedule(clinics, rate=0, seconds=1)


def test_with_the_referral_service_one_patient_in_four_is_also_referred_up(clinics):
    from yigongti_contracts import refdata
    from yigongti_terminal.load import REFERRAL_EVERY, journey_for, service_of

    schedule = Schedule(clinics, rate=60, seconds=4, services=("lab", "referral"))
    records = [schedule.record(n) for n in range(schedule.total)]
    orders = [r.event for r in records if isinstance(r.event, LabOrderPlaced)]
    referrals = [r for r in records if r.service == "referral"]
    assert referrals and len(referrals) <= len(orders) // REFERRAL_EVERY + len(clinics)
    data = refdata.load()
    by_patient = {o.patient_ref: o for o in orders}
    for r in referrals:
        request = r.event
        assert request.from_institution == r.clinic.institution_id
        assert request.patient_ref in by_patient  # one of the clinic's lab patients
        assert by_patient[request.patient_ref].ordering_institution == r.clinic.institution_id
        first = data.upward_candidates(r.clinic.institution_id, "chest_pain_centre")[0]
        assert request.to_institution == first.id
    assert {service_of(r.event) for r in records} == {"lab", "referral"}
    only = journey_for(("referral",))(clinics[0], 1)
    assert [service_of(e) for e in only] == ["referral"]
    with pytest.raises(ValueError):
        journey_for(("settlement",))
    with pytest.raises(ValueError):
        Schedule(clinics, rate=1, seconds=1, bad=1, services=("referral",))


def test_counts_are_kept_per_service(clinics):
    schedule = Schedule(clinics, rate=60, seconds=4, services=("lab", "referral"))
    tally = Tally()
    items = [(_sent(tally, schedule, n, 0.0)) for n in range(schedule.total)]
    referral = next((i, d) for i, d in items if i.service == "referral")
    tally.seen("yigongti.referral.opened.v1", {"referral_id": referral[1]["referral_id"]}, 0.2)
    lab = items[0]
    tally.seen(REJECTED, {"rejected_id": lab[0].ce_id, "reason": "unknown_test"}, 0.1)
    by = tally.figures(1.0)["by_service"]
    assert by["referral"]["answered"] == 1 and by["lab"]["refused"] == 1
    assert by["lab"]["sent"] + by["referral"]["sent"] == schedule.total


def test_saved_clinics_come_back_with_their_keys_and_a_registry_fragment(tmp_path):
    import yaml
    from yigongti_kit.intake_auth import parse_terminals
    from yigongti_terminal.load import load_clinics, save_clinics

    assert load_clinics(tmp_path / "none") == []
    made = make_clinics(2, prefix="t-save")
    fragment = save_clinics(tmp_path / "keys", made)
    back = load_clinics(tmp_path / "keys")
    assert [(c.terminal_id, c.institution_id, c.signer.public_key_b64) for c in back] == \
        [(c.terminal_id, c.institution_id, c.signer.public_key_b64) for c in made]
    assert len(parse_terminals(fragment.read_text(), "fragment")) == 2  # a valid registry
    assert "PRIVATE" not in fragment.read_text() and yaml.safe_load(fragment.read_text())
    for key in (tmp_path / "keys").glob("terminal_*.key"):
        assert key.stat().st_mode & 0o077 == 0

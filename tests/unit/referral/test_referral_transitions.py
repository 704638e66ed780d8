"""The referral case, transition by transition: what each fact and timer does,
what it publishes, which timers it sets, and every refusal."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from referralcases import (
    COUNTY,
    DAFENG,
    HUTUBI,
    RULES,
    T0,
    TOWNSHIP,
    World,
    accept,
    arrived,
    cancelled,
    decline,
    departed,
    discharged,
    down,
    follow_up,
    minutes,
    opened,
    up,
)
from yigongti_contracts.refdata import Capability
from yigongti_referral.case import (
    ACCEPTANCE,
    NOT_CLOSED,
    NOT_RECEIVED,
    PAPERWORK,
    REQUEST_GRACE,
    TRANSIT_OVERDUE,
    VALIDITY,
    add_months,
    follow_up_timer,
)
from yigongti_referral.codes import (
    CaseState,
    ChronicClass,
    ClosureOutcome,
    LostReason,
    Refusal,
    RoundState,
    Urgency,
)
from yigongti_referral.events import (
    FollowUpDone,
    FollowUpMissed,
    FollowUpScheduled,
    PatientInTransit,
    PatientInTransitOverdue,
    PatientReceived,
    ReferralAccepted,
    ReferralClosed,
    ReferralDeclined,
    ReferralExpired,
    ReferralLost,
    ReferralOpened,
    ReferralPaperworkOverdue,
    ReferralRerouted,
    ReferralRerouteProposed,
    ReferralWithdrawn,
)
from yigongti_referral.task_status import TASK_STATUS, task_status

P01, P02 = "652300-P01", "652300-P02"
DAY = timedelta(days=1)


def timer_names(w: World, rid: str = "R1") -> set[str]:
    return {name for (r, name) in w.timers if r == rid}


# --- the journeys -------------------------------------------------------------


def test_upward_journey_closes_the_loop_with_the_discharge_summary() -> None:
    w = opened(accept(), departed(), arrived(), discharged())
    assert w.types() == ["ReferralOpened", "ReferralAccepted", "PatientInTransit",
                         "PatientReceived", "ReferralClosed"]
    closed = w.of(ReferralClosed)[0]
    assert (closed.from_institution, closed.outcome, closed.discharge_summary_id) == \
        (TOWNSHIP, ClosureOutcome.transferred_to_primary_care, "DS-1")
    assert w.state("R1") is CaseState.closed and w.timers == {} and w.rejections == []


def test_opening_sets_the_acceptance_deadline_and_the_validity() -> None:
    w = opened()
    o = w.of(ReferralOpened)[0]
    assert o.accept_by == T0 + timedelta(minutes=30)
    assert o.valid_until == T0.replace(month=4) and o.admissions_allowed == 1
    assert (o.root_referral_id, o.parent_referral_id) == ("R1", None)
    assert o.attached_results == ("lab:CTNI-1",) and o.patient_ref.startswith("v1:")
    assert w.timers == {("R1", ACCEPTANCE): o.accept_by, ("R1", VALIDITY): o.valid_until}


@pytest.mark.parametrize("urgency,deadline", [
    (Urgency.emergency, timedelta(minutes=30)),
    (Urgency.urgent, timedelta(hours=4)),
    (Urgency.routine, timedelta(hours=48)),
])
def test_acceptance_deadline_by_urgency_counts_from_when_the_service_sees_it(
        urgency, deadline) -> None:
    w = World()
    w.send(up(urgency=urgency), now=minutes(7))  # the terminal queued it for 7 minutes
    assert w.of(ReferralOpened)[0].accept_by == minutes(7) + deadline


def test_a_chronic_class_extends_the_validity_to_a_year_of_unlimited_visits() -> None:
    w = opened(chronic_class=ChronicClass.uraemia, to=P02, frm="652302-H01",
               capability=Capability.dialysis)
    o = w.of(ReferralOpened)[0]
    assert (o.valid_until, o.admissions_allowed) == (T0.replace(year=2026), None)


def test_add_months_clamps_to_the_end_of_the_month() -> None:
    assert add_months(T0.replace(month=11, day=30), 3) == T0.replace(year=2026, month=2, day=28)


def test_downward_journey_closes_on_arrival_and_schedules_the_rounds() -> None:
    w = opened(accept("D1"), departed("D1"), request=down())
    w.send(arrived("D1", minutes(120)))
    assert w.types() == ["ReferralOpened", "ReferralAccepted", "PatientInTransit",
                         "PatientReceived", "ReferralClosed", "FollowUpScheduled",
                         "FollowUpScheduled"]
    closed = w.of(ReferralClosed)[0]
    assert (closed.outcome, closed.from_institution, closed.closed_at) == \
        (ClosureOutcome.care_taken_over, HUTUBI, minutes(120))
    rounds = w.of(FollowUpScheduled)
    assert [(r.round_day, r.due_at, r.missed_after, r.handed_over_by) for r in rounds] == [
        (7, minutes(120) + 7 * DAY, minutes(120) + 10 * DAY, "doc-c1"),
        (30, minutes(120) + 30 * DAY, minutes(120) + 37 * DAY, "doc-c1")]
    assert timer_names(w, "D1") == {follow_up_timer(7), follow_up_timer(30)}


def test_follow_up_done_missed_and_recorded_late() -> None:
    w = opened(accept("D1"), departed("D1"), arrived("D1"), request=down())
    w.send(follow_up("D1", 7))
    w.fire("D1", follow_up_timer(30))
    missed = w.of(FollowUpMissed)
    assert [(m.round_day, m.handed_over_by, m.from_institution) for m in missed] == \
        [(30, "doc-c1", HUTUBI)]  # the county doctor who handed over is told
    w.send(follow_up("D1", 30))  # the village doctor's terminal was offline
    done = w.of(FollowUpDone)
    assert [(d.round_day, d.after_missed) for d in done] == [(7, False), (30, True)]
    assert [r.state for r in w.cases["D1"].rounds] == [RoundState.done, RoundState.done]
    assert w.timers == {}


def test_the_care_plan_may_name_its_own_rounds() -> None:
    plan = replace(down().care_plan, follow_up_days=(3, 14, 90))
    w = opened(accept("D1"), arrived("D1"), request=down(care_plan=plan))
    # the grace of the nearest default round at or after the day, else the last
    assert [(r.round_day, r.missed_after - r.due_at) for r in w.of(FollowUpScheduled)] == \
        [(3, 3 * DAY), (14, 7 * DAY), (90, 7 * DAY)]


# --- timers -------------------------------------------------------------------


def test_acceptance_deadline_expires_and_proposes_the_next_capable() -> None:
    w = opened(urgency=Urgency.urgent)
    w.fire("R1", ACCEPTANCE)
    expired = w.of(ReferralExpired)[0]
    assert (expired.from_institution, expired.expired_at) == (TOWNSHIP, T0 + timedelta(hours=4))
    proposal = w.of(ReferralRerouteProposed)[0]
    assert (proposal.proposed_institution, proposal.from_institution) == (P02, TOWNSHIP)
    assert w.state("R1") is CaseState.expired and w.timers == {}
    assert len(w.cases) == 1  # nothing opened without the sender


def test_an_emergency_reroutes_at_once_to_a_child_case() -> None:
    w = opened()
    w.fire("R1", ACCEPTANCE)
    rerouted = w.of(ReferralRerouted)[0]
    child = w.cases[rerouted.child_referral_id]
    assert rerouted.at_once and rerouted.to_institution == P02
    assert child.state is CaseState.requested and child.to_institution == P02
    opened_child = w.of(ReferralOpened, child.referral_id)[0]
    assert (opened_child.parent_referral_id, opened_child.root_referral_id) == ("R1", "R1")
    assert w.cases["R1"].rerouted_to == child.referral_id
    assert (child.referral_id, ACCEPTANCE) in w.timers


def test_the_chain_ends_when_no_capable_institution_is_left() -> None:
    w = opened(decline())
    w.fire_all()
    chain = [e.to_institution for e in w.of(ReferralOpened)]
    assert chain == [COUNTY, P02, P01]
    assert [c.state for c in w.cases.values()] == \
        [CaseState.declined, CaseState.expired, CaseState.expired]
    roots = {e.root_referral_id for e in w.of(ReferralOpened)}
    assert roots == {"R1"}  # the sender sees the whole chain


def test_a_downward_referral_is_not_rerouted() -> None:
    w = opened(request=down())
    w.fire("D1", ACCEPTANCE)
    assert w.types() == ["ReferralOpened", "ReferralExpired"]


def test_in_transit_alert_then_lost_when_not_received() -> None:
    w = opened(accept(), departed(at=minutes(15)))
    assert w.timers[("R1", TRANSIT_OVERDUE)] == minutes(15) + timedelta(hours=4)
    w.fire("R1", TRANSIT_OVERDUE)
    assert w.state("R1") is CaseState.in_transit
    assert w.of(PatientInTransitOverdue)[0].departed_at == minutes(15)
    w.fire("R1", NOT_RECEIVED)
    lost = w.of(ReferralLost)[0]
    assert (lost.reason, lost.lost_at, lost.from_institution) == \
        (LostReason.not_received, minutes(15) + timedelta(hours=12), TOWNSHIP)
    assert w.timers == {}


def test_received_but_not_closed_is_lost_after_the_limit() -> None:
    w = opened(accept(), departed(), arrived(at=minutes(60)))
    assert w.timers == {("R1", NOT_CLOSED): minutes(60) + 60 * DAY}
    w.fire("R1", NOT_CLOSED)
    assert w.of(ReferralLost)[0].reason is LostReason.not_closed


def test_accepted_but_never_departed_is_lost_when_the_validity_ends() -> None:
    w = opened(accept())
    w.fire("R1", VALIDITY)
    lost = w.of(ReferralLost)[0]
    assert (lost.reason, lost.lost_at) == (LostReason.never_departed, T0.replace(month=4))


def test_paperwork_reminder_fires_once_for_an_emergency_that_left_first() -> None:
    w = opened(departed(at=minutes(5)))
    transit = w.of(PatientInTransit)[0]
    assert transit.paperwork_pending and w.cases["R1"].paperwork_pending
    assert ACCEPTANCE not in timer_names(w)
    due = w.timers[("R1", PAPERWORK)]
    assert due == minutes(5) + timedelta(hours=24)
    w.fire("R1", PAPERWORK)
    w.fire("R1", PAPERWORK, due=due)  # a duplicate firing
    assert len(w.of(ReferralPaperworkOverdue)) == 1


def test_a_stale_timer_does_nothing() -> None:
    w = opened(accept())
    out = w.fire("R1", ACCEPTANCE, due=T0 + timedelta(minutes=30))  # cancelled by the accept
    assert out.events == () and w.state("R1") is CaseState.accepted


def test_records_without_a_request_are_refused_after_the_grace() -> None:
    w = World()
    w.send(arrived(), fact_id="a1")
    w.send(departed(), fact_id="d1")
    assert w.timers == {("R1", REQUEST_GRACE): T0 + timedelta(hours=24)}
    w.fire("R1", REQUEST_GRACE)
    assert [(r.fact_id, r.reason) for r in w.rejections] == \
        [("a1", Refusal.prerequisite_missing), ("d1", Refusal.prerequisite_missing)]
    assert "R1" not in w.cases and w.events == []


# --- out of order -------------------------------------------------------------


def test_an_arrival_implies_the_departure_recorded_as_inferred() -> None:
    w = opened(accept(), arrived(at=minutes(60)))
    transit, received = w.of(PatientInTransit)[0], w.of(PatientReceived)[0]
    assert transit.inferred and transit.departed_at is None
    assert received.departure_inferred
    out = w.send(departed(at=minutes(15)))  # the township's record comes late
    assert out.events == () and out.rejections == ()
    assert w.cases["R1"].departed_at == minutes(15)
    assert not w.cases["R1"].departure_inferred


def test_records_before_the_request_are_applied_when_it_opens() -> None:
    w = World()
    for f in (discharged(), arrived(), departed(), accept()):
        w.send(f)
    assert w.events == [] and len(w.cases["R1"].parked) == 4
    w.send(up())
    assert w.types() == ["ReferralOpened", "ReferralAccepted", "PatientInTransit",
                         "PatientReceived", "ReferralClosed"]
    assert w.cases["R1"].parked == () and w.timers == {}


def test_a_routine_departure_before_the_acceptance_waits_for_it() -> None:
    w = opened(departed(), urgency=Urgency.routine)
    assert w.state("R1") is CaseState.requested and len(w.cases["R1"].parked) == 1
    w.send(accept())
    assert w.types() == ["ReferralOpened", "ReferralAccepted", "PatientInTransit"]


def test_a_parked_departure_is_refused_when_the_receiver_declines() -> None:
    w = opened(departed(), urgency=Urgency.routine)
    w.send(decline())
    assert w.reasons() == ["case_declined"] and w.cases["R1"].parked == ()


def test_an_emergency_cannot_close_until_its_paperwork_arrives() -> None:
    w = opened(departed(), arrived(), discharged())
    assert w.state("R1") is CaseState.received
    assert w.of(PatientReceived)[0].paperwork_pending
    assert len(w.cases["R1"].parked) == 1  # the discharge waits
    w.send(accept(at=minutes(200)))
    accepted = w.of(ReferralAccepted)[0]
    assert accepted.after_departure and w.state("R1") is CaseState.closed
    assert w.timers == {}


def test_an_emergency_that_arrives_before_any_other_record() -> None:
    w = opened(arrived(at=minutes(40)))
    assert w.types() == ["ReferralOpened", "PatientInTransit", "PatientReceived"]
    assert w.timers[("R1", PAPERWORK)] == minutes(40) + timedelta(hours=24)


def test_a_downward_emergency_without_paperwork_closes_once_accepted() -> None:
    w = opened(arrived("D1"), request=down(urgency=Urgency.emergency))
    assert w.state("D1") is CaseState.received
    w.send(accept("D1", minutes(90)))
    assert w.state("D1") is CaseState.closed
    assert w.of(ReferralClosed)[0].closed_at == minutes(90)


def test_a_discharge_before_the_arrival_waits_for_it() -> None:
    w = opened(accept(), departed(), discharged())
    assert w.state("R1") is CaseState.in_transit
    w.send(arrived())
    assert w.state("R1") is CaseState.closed


def test_a_follow_up_before_the_arrival_record_waits_for_the_close() -> None:
    w = opened(accept("D1"), follow_up("D1", 7), request=down())
    w.send(arrived("D1"))
    assert [d.round_day for d in w.of(FollowUpDone)] == [7]
    assert timer_names(w, "D1") == {follow_up_timer(30)}


# --- withdrawal ---------------------------------------------------------------


@pytest.mark.parametrize("before", [[], [accept()]])
def test_a_cancellation_withdraws_before_departure(before) -> None:
    w = opened(*before)
    w.send(cancelled())
    withdrawn = w.of(ReferralWithdrawn)[0]
    assert withdrawn.previous_state is (CaseState.accepted if before else CaseState.requested)
    assert withdrawn.from_institution == TOWNSHIP and w.timers == {}


# --- re-routing by the sender's confirmation ------------------------------------


def test_the_sender_confirms_a_proposed_reroute_with_a_child_request() -> None:
    w = opened(decline(), urgency=Urgency.routine)
    assert w.of(ReferralRerouteProposed)[0].proposed_institution == P02
    w.send(up("R2", to=P02, urgency=Urgency.routine, parent_referral_id="R1"))
    rerouted = w.of(ReferralRerouted)[0]
    assert (rerouted.referral_id, rerouted.child_referral_id, rerouted.at_once) == \
        ("R1", "R2", False)
    assert w.of(ReferralOpened, "R2")[0].root_referral_id == "R1"
    assert w.cases["R1"].rerouted_to == "R2" and w.cases["R1"].proposed_institution is None
    assert w.cases["R2"].tried == (COUNTY, P02)


def test_the_decliners_alternative_is_proposed_first() -> None:
    w = opened(decline(alternative=P01), urgency=Urgency.routine)
    assert w.of(ReferralDeclined)[0].alternative_institution == P01
    assert w.of(ReferralRerouteProposed)[0].proposed_institution == P01


# --- refusals -----------------------------------------------------------------


def _refused(w: World) -> list[tuple[str, Refusal]]:
    return [(f, r) for rej in w.rejections for f, r in rej.fields]


@pytest.mark.parametrize("setup,fact,field,reason", [
    # the party that may record each record
    ([], up(), "from_institution", Refusal.forbidden_institution),
    ([], accept(), "referral_id", Refusal.forbidden_institution),
    ([accept()], departed(), "referral_id", Refusal.forbidden_institution),
    ([accept()], arrived(), "referral_id", Refusal.forbidden_institution),
    ([accept()], cancelled(), "referral_id", Refusal.forbidden_institution),
])
def test_a_record_from_the_wrong_institution_is_refused(setup, fact, field, reason) -> None:
    w = World()
    if not (setup == [] and fact == up()):
        w.send(up())
    for f in setup:
        w.send(f)
    w.send(fact, sender="652325-B01")
    assert _refused(w) == [(field, reason)]


REFUSALS = [
    ([], up(to=P01, capability=None), "to_institution", Refusal.skips_level),
    ([up()], up(to=P02, parent_referral_id=None), "referral_id", Refusal.referral_id_in_use),
    ([up(), accept()], arrived(at=T0.replace(month=5)), "arrived_at", Refusal.validity_ended),
    ([up(), accept(), departed(at=minutes(50))], arrived(at=minutes(40)), "arrived_at",
     Refusal.departure_after_arrival),
    ([up(), accept(), arrived(at=minutes(40))], departed(at=minutes(50)), "departed_at",
     Refusal.departure_after_arrival),
    ([down(), accept("D1"), arrived("D1")], discharged("D1"), "referral_id", Refusal.not_upward),
    ([up(), accept(), arrived()], follow_up("R1"), "referral_id", Refusal.no_follow_up_plan),
    ([down(), accept("D1"), arrived("D1")], follow_up("D1", 14), "round_day",
     Refusal.unknown_round),
    ([up(), accept()], decline(), "decision", Refusal.already_accepted),
    ([up(), decline()], accept(), "decision", Refusal.already_declined),
    ([up(), accept(), arrived(), discharged()], discharged(summary_id="DS-2"), "summary_id",
     Refusal.already_closed),
    ([up(), departed()], decline(), "decision", Refusal.patient_departed),
    ([up(), accept(), departed()], cancelled(), "referral_id", Refusal.patient_departed),
    ([up(), accept(), arrived()], cancelled(), "referral_id", Refusal.patient_departed),
    ([up()], decline(reason=None), "reason", Refusal.decline_reason_missing),
    # after the end, the sender having been told
    ([up(), accept(), arrived(), discharged()], cancelled(), "referral_id", Refusal.case_closed),
    ([up(), decline()], departed(), "referral_id", Refusal.case_declined),
    ([up(), cancelled()], accept(), "referral_id", Refusal.case_withdrawn),
    ([up(), cancelled()], arrived(), "referral_id", Refusal.case_withdrawn),
    ([up(), decline()], discharged(), "referral_id", Refusal.case_declined),
    ([down(), decline("D1")], follow_up("D1"), "referral_id", Refusal.case_declined),
    ([up(), decline()], cancelled(), "referral_id", Refusal.case_declined),
]


@pytest.mark.parametrize("setup,fact,field,reason", REFUSALS)
def test_impossible_transitions_are_refused_with_a_reason(setup, fact, field, reason) -> None:
    w = World()
    for f in setup:
        w.send(f)
    before = w.cases.get(fact.referral_id)
    out = w.send(fact)
    assert _refused(w) == [(field, reason)]
    assert out.events == () and out.timers == ()
    assert w.cases.get(fact.referral_id) == before


@pytest.mark.parametrize("timer,reason", [
    (ACCEPTANCE, Refusal.case_expired), (VALIDITY, Refusal.case_lost),
])
def test_records_after_an_expiry_or_a_loss_are_refused(timer, reason) -> None:
    w = opened(*([accept()] if timer == VALIDITY else []), urgency=Urgency.routine)
    w.fire("R1", timer)
    w.send(arrived())
    assert w.reasons() == [reason.value]


@pytest.mark.parametrize("child,reason", [
    (up("R2", to=P02, parent_referral_id="R9"), Refusal.parent_not_found),
    (up("R2", to=P02, urgency=Urgency.routine, parent_referral_id="R1", frm="652301-B01",),
     Refusal.parent_mismatch),
    (up("R2", to=COUNTY, urgency=Urgency.routine, parent_referral_id="R1"),
     Refusal.already_tried),
])
def test_a_reroute_confirmation_must_fit_its_parent(child, reason) -> None:
    w = opened(decline(), urgency=Urgency.routine)
    w.send(child)
    assert w.reasons() == [reason.value] and "R2" not in w.cases


def test_a_reroute_of_an_open_case_is_refused() -> None:
    w = opened(urgency=Urgency.routine)
    w.send(up("R2", to=P02, urgency=Urgency.routine, parent_referral_id="R1"))
    assert w.reasons() == ["parent_not_reroutable"]


def test_a_second_reroute_of_the_same_parent_is_refused() -> None:
    w = opened(decline(), urgency=Urgency.routine)
    w.send(up("R2", to=P02, urgency=Urgency.routine, parent_referral_id="R1"))
    w.send(up("R3", to=P01, urgency=Urgency.routine, parent_referral_id="R1"))
    assert w.reasons() == ["already_rerouted"]


def test_an_emergency_parent_rerouted_at_once_refuses_a_confirmation() -> None:
    w = opened(decline())
    w.send(up("R2", to=P01, parent_referral_id="R1"))
    assert w.reasons() == ["already_rerouted"]


# --- repeats publish nothing ----------------------------------------------------

JOURNEYS = {
    "up": [up(), accept(), departed(), arrived(), discharged()],
    "down": [down(), accept("D1"), departed("D1"), arrived("D1"), follow_up("D1", 7)],
    "declined": [up(), decline()],
    "withdrawn": [up(), cancelled()],
    "emergency first": [up(), departed(), arrived(), accept(at=minutes(100)), discharged()],
}


@pytest.mark.parametrize("name", JOURNEYS)
def test_every_record_repeated_publishes_nothing(name) -> None:
    w = World()
    for fact in JOURNEYS[name]:
        w.send(fact)
        state = w.cases[fact.referral_id]
        again = w.send(fact)  # a second copy, under another ce_id
        assert (again.events, again.timers, again.rejections) == ((), (), ())
        assert w.cases[fact.referral_id] == state


# --- FHIR Task status (HL7 BSeR) ---------------------------------------------------


@pytest.mark.parametrize("state,status,business", [
    (CaseState.requested, "requested", None),
    (CaseState.accepted, "accepted", None),
    (CaseState.declined, "rejected", None),
    (CaseState.expired, "failed", "expired"),
    (CaseState.lost, "failed", "lost"),
    (CaseState.in_transit, "in-progress", "in-transit"),
    (CaseState.received, "in-progress", "patient-received"),
    (CaseState.closed, "completed", None),
    (CaseState.withdrawn, "cancelled", None),
])
def test_task_status_follows_bser(state, status, business) -> None:
    assert task_status(state) == (status, business)


def test_every_state_has_a_task_status_and_received_is_never_the_patient() -> None:
    assert set(TASK_STATUS) == set(CaseState)
    assert all(status != "received" for status, _ in TASK_STATUS.values())


def test_the_rules_of_these_tests_are_the_packaged_ones() -> None:
    assert RULES.policy.acceptance[Urgency.emergency] == timedelta(minutes=30)
    assert DAFENG in {i.id for i in RULES.refdata.institutions}

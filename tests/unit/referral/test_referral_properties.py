"""Property tests of the referral state machine over random orders and
duplicates of intake records and timer firings (issue 12, «Checked by»):
once all timers have fired, every opened case ends in exactly one terminal
state, the sender is told of it, nothing is published twice, and nothing is
left parked."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from referralcases import (
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
    up,
)
from yigongti_contracts.refdata import Capability
from yigongti_referral.codes import TERMINAL, Direction, RoundState, Urgency
from yigongti_referral.events import (
    TERMINAL_EVENT,
    ReferralOpened,
    ReferralRerouteProposed,
)
from yigongti_referral.facts import ReferralRequested

REQUESTS = [
    up(urgency=Urgency.emergency),
    up(urgency=Urgency.urgent),
    up(urgency=Urgency.routine),
    up(frm="652325-V01", to="652325-B01", capability=None, urgency=Urgency.routine),
    down("R1"),
    down("R1", urgency=Urgency.emergency),
]


def _when(draw, low: int, high: int):
    """A record's own time, in minutes after T0: mostly in journey order, now
    and then anywhere in the first weeks (a wrong clock, a late entry)."""
    if draw(st.integers(0, 9)) == 9:
        return minutes(draw(st.integers(0, 60 * 24 * 40)))
    return minutes(draw(st.integers(low, high)))


@st.composite
def journeys(draw) -> tuple[ReferralRequested, list]:
    """A request and a random selection of the records a case may receive."""
    request = draw(st.sampled_from(REQUESTS))
    facts: list = [request]
    decision = draw(st.sampled_from(["accept", "accept", "decline", "both", "none"]))
    if decision in ("accept", "both"):
        facts.append(accept(at=_when(draw, 1, 20)))
    if decision in ("decline", "both"):
        facts.append(decline(at=_when(draw, 1, 20), alternative=draw(
            st.sampled_from([None, "652300-P01", "652301-B01"]))))
    if draw(st.integers(0, 4)) > 0:
        facts.append(departed(at=_when(draw, 10, 60)))
    if draw(st.integers(0, 4)) > 0:
        facts.append(arrived(at=_when(draw, 30, 300)))
    if draw(st.integers(0, 4)) > 0:
        facts.append(discharged(at=_when(draw, 60 * 24, 60 * 24 * 10),
                                summary_id=draw(st.sampled_from(["DS-1", "DS-2"]))))
    for day in draw(st.lists(st.sampled_from([7, 30, 14]), max_size=3)):
        facts.append(follow_up("R1", day, _when(draw, 60 * 24 * day, 60 * 24 * (day + 2))))
    if draw(st.integers(0, 2)) == 2:
        facts.append(cancelled(at=_when(draw, 0, 30)))
    if draw(st.integers(0, 5)) == 5:
        facts.append(request)  # the request again
    return request, facts


def _sender(wrong: bool) -> str | None:
    return "652328-B01" if wrong else None  # an institution outside the case; None: unchecked


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(journey=journeys(), data=st.data())
def test_every_case_ends_once_and_the_sender_is_told(journey, data) -> None:
    request, facts = journey
    w = World()
    # (record, ce_id, signing institution): now and then one signed elsewhere
    queue = [(f, f"ce-{i}", _sender(data.draw(st.integers(0, 9), label="wrong") == 9))
             for i, f in enumerate(facts)]
    queue = data.draw(st.permutations(queue), label="order")
    sent: list[tuple[object, str, str | None]] = []
    confirmed: set[str] = set()
    redelivered = 0

    while queue:
        # time passes, mostly minutes, now and then days (a terminal offline);
        # the timers due by then fire, in order
        big = data.draw(st.integers(0, 9), label="offline") == 9
        w.now += timedelta(minutes=data.draw(
            st.integers(0, 60 * 24 * 3) if big else st.integers(0, 10), label="delay"))
        while w.timers and min(w.timers.values()) <= w.now:
            (rid, name), _ = min(w.timers.items(), key=lambda kv: (kv[1], kv[0]))
            w.fire(rid, name)
        if w.fired and data.draw(st.integers(0, 6), label="refire") == 6:
            old = data.draw(st.sampled_from(w.fired), label="which")
            again = w.fire(old.referral_id, old.name, due=old.due_at)
            assert again.events == ()
        fact, fact_id, sender = queue.pop(0)
        w.send(fact, fact_id=fact_id, sender=sender)
        sent.append((fact, fact_id, sender))
        if data.draw(st.booleans(), label="duplicate"):
            # the same record delivered twice
            again = w.send(fact, fact_id=fact_id, sender=sender)
            assert again.events == ()
        if redelivered < 6 and data.draw(st.integers(0, 5), label="redeliver") == 5:
            redelivered += 1
            # a duplicate delivered later, anywhere in what is left
            at = data.draw(st.integers(0, len(queue)), label="where")
            queue.insert(at, data.draw(st.sampled_from(sent), label="dup"))
        for proposal in w.of(ReferralRerouteProposed):
            # the sender confirms some proposals with a child request
            if proposal.referral_id in confirmed:
                continue
            confirmed.add(proposal.referral_id)
            if data.draw(st.booleans(), label="confirm"):
                child = ReferralRequested(**{
                    **request.__dict__, "referral_id": f"C{len(confirmed)}",
                    "to_institution": proposal.proposed_institution,
                    "parent_referral_id": proposal.referral_id})
                queue.insert(data.draw(st.integers(0, len(queue)), label="when"),
                             (child, f"ce-child-{len(confirmed)}", None))

    w.fire_all()

    if "R1" in w.cases:  # what the run covered (pytest --hypothesis-show-statistics)
        event(f"R1 ended {w.cases['R1'].state.value}")
    for reason in {r.reason.value for r in w.rejections}:
        event(f"refused {reason}")
    for e in w.events:
        if getattr(e, "after_departure", False) or getattr(e, "inferred", False) \
                or getattr(e, "after_missed", False):
            event(f"{type(e).__name__} out of order")
        elif type(e).__name__ in ("ReferralRerouted", "FollowUpMissed",
                                  "ReferralPaperworkOverdue", "PatientInTransitOverdue"):
            event(type(e).__name__)
    opened_ids = {e.referral_id for e in w.of(ReferralOpened)}
    assert opened_ids == set(w.cases), "an unopened case was left behind"
    for rid in opened_ids:
        case = w.cases[rid]
        assert case.state in TERMINAL, (rid, case.state)
        told = [e for e in w.events if type(e) in TERMINAL_EVENT.values()
                and e.referral_id == rid]
        assert len(told) == 1, (rid, [type(e).__name__ for e in told])
        assert isinstance(told[0], TERMINAL_EVENT[case.state])
        assert told[0].from_institution == case.from_institution  # the sender is told
        assert case.parked == ()
        if case.direction is Direction.down and case.rounds:
            assert all(r.state in (RoundState.done, RoundState.missed) for r in case.rounds)
    assert w.timers == {}

    # nothing published twice: one of each event per case (per round for follow-ups)
    keys = Counter((type(e).__name__, getattr(e, "referral_id", None),
                    getattr(e, "round_day", None)) for e in w.events)
    assert [k for k, n in keys.items() if n > 1] == []


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_an_emergency_chain_ends_even_if_nobody_answers(data) -> None:
    w = World()
    w.send(up(capability=data.draw(st.sampled_from(
        [Capability.chest_pain_centre, Capability.stroke_centre, None]))))
    w.fire_all()
    opened = w.of(ReferralOpened)
    assert all(c.state in TERMINAL for c in w.cases.values())
    assert len({e.to_institution for e in opened}) == len(opened)  # never the same twice
    assert all(e.from_institution == TOWNSHIP for e in opened)

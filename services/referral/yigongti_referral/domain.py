"""The referral case (双向转诊) as a pure state machine (DESIGN §5; issue 12).

    requested → accepted | declined | expired → in transit → received → closed
    terminal: closed (with its outcome), declined, expired, withdrawn, lost

`apply(case, fact, …)` takes the case as stored (or None) and one fact — an
intake record, or a timer the machine set earlier firing — and returns an
`Outcome`: the new case, the events to publish through the outbox, the timers
to set and cancel, the intake records to refuse, and any other case it
changed (a re-routed parent, a child opened at once). Nothing here reads a
clock or a database: `now` is the service's clock, passed in.

Township networks drop and terminals queue offline, so records arrive out of
order. A plausible late record is parked in the case and applied when what it
waits for arrives (an acceptance, an arrival); an arrival implies the
departure, recorded as inferred. Only an impossible transition is refused,
with a reason code (codes.Refusal). When the case ends, what is still parked
is refused. A record repeated (a duplicate, or a second copy under another id)
changes nothing and publishes nothing.

An emergency may leave before the receiver's acceptance is recorded: the case
goes in transit flagged `paperwork_pending`, a reminder fires after N hours
(data), and it cannot close until the acceptance arrives.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from .case import (
    ACCEPTANCE,
    FOLLOW_UP,
    NOT_CLOSED,
    NOT_RECEIVED,
    PAPERWORK,
    REQUEST_GRACE,
    TRANSIT_OVERDUE,
    VALIDITY,
    CancelTimer,
    Case,
    FollowUpRound,
    Outcome,
    Parked,
    Rejection,
    Rules,
    SetTimer,
    add_months,
    follow_up_timer,
)
from .codes import (
    CaseState,
    ClosureOutcome,
    Decision,
    Direction,
    LostReason,
    Refusal,
    RoundState,
    Urgency,
    ended,
)
from .events import (
    Event,
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
from .facts import (
    DischargeSummarySubmitted,
    FollowUpRecorded,
    IntakeFact,
    PatientArrived,
    PatientDeparted,
    ReferralCancelled,
    ReferralDecision,
    ReferralRequested,
    TimerFired,
)
from .routing import derived_id, next_candidate, referral_problems


class _Park:
    """A handler's verdict: the record waits in the case."""


PARK = _Park()
Problem = tuple[str, Refusal]
Verdict = _Park | Problem | None  # None: applied, or a repeat that changes nothing


class _Step:
    """The outcome being built: the case as it changes, and what to emit."""

    def __init__(self, case: Case, rules: Rules, now: datetime) -> None:
        self.case = case
        self.rules = rules
        self.now = now
        self.events: list[Event] = []
        self.timers: list[SetTimer | CancelTimer] = []
        self.rejections: list[Rejection] = []
        self.others: list[Case] = []

    def update(self, **changes: object) -> None:
        self.case = replace(self.case, **changes)  # type: ignore[arg-type]

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def set_timer(self, name: str, due_at: datetime) -> None:
        timers = dict(self.case.timers)
        timers[name] = due_at
        self.update(timers=tuple(sorted(timers.items())))
        self.timers.append(SetTimer(self.case.referral_id, name, due_at))

    def cancel_timer(self, name: str) -> None:
        timers = dict(self.case.timers)
        if timers.pop(name, None) is not None:
            self.update(timers=tuple(sorted(timers.items())))
            self.timers.append(CancelTimer(self.case.referral_id, name))

    def cancel_timers(self) -> None:
        for name, _ in self.case.timers:
            self.cancel_timer(name)

    def reject(self, fact_id: str, problems: list[Problem]) -> None:
        self.rejections.append(Rejection(self.case.referral_id, fact_id, problems[0][1],
                                         tuple(problems)))

    def merge(self, other: _Step) -> None:
        self.events += other.events
        self.timers += other.timers
        self.rejections += other.rejections
        self.others += [other.case, *other.others]

    def outcome(self, *, keep: bool = True) -> Outcome:
        """The outcome; `keep=False`: the service keeps no case (none was opened)."""
        return Outcome(case=self.case if keep else None, events=tuple(self.events),
                       timers=tuple(self.timers), rejections=tuple(self.rejections),
                       others=tuple(self.others))


# --- the entry point --------------------------------------------------------


def apply(case: Case | None, fact: IntakeFact | TimerFired, *, now: datetime, rules: Rules,
          fact_id: str = "", sender: str | None = None, parent: Case | None = None) -> Outcome:
    """Apply one fact to a case (None if the service has none for its
    referral_id). `fact_id` is the record's ce_id, `sender` the institution
    of the terminal that signed it (None: not checked), `parent` the case a
    ReferralRequested names as its parent (a confirmed re-route)."""
    if isinstance(fact, TimerFired):
        return _on_timer(case, fact, rules, now) if case is not None else Outcome(None)

    step = _Step(case or Case(fact.referral_id), rules, now)
    if isinstance(fact, ReferralRequested) and step.case.state is None:
        problems = _open_problems(fact, parent, rules, sender)
        if problems:
            step.reject(fact_id, problems)
            return step.outcome(keep=case is not None)
        _open_case(step, fact, parent)
        if parent is not None:
            step.others.append(replace(parent, rerouted_to=fact.referral_id,
                                       proposed_institution=None))
        _drain(step)
        return step.outcome()

    verdict = _handle(step, fact, sender)
    if verdict is PARK:
        _park(step, Parked(fact, fact_id, sender))
        return step.outcome()
    if isinstance(verdict, tuple):
        step.reject(fact_id, [verdict])
        return step.outcome(keep=case is not None)
    _drain(step)
    return step.outcome()


def _park(step: _Step, parked: Parked) -> None:
    if any(p.fact_id == parked.fact_id for p in step.case.parked):
        return
    step.update(parked=(*step.case.parked, parked))
    if step.case.state is None and REQUEST_GRACE not in dict(step.case.timers):
        step.set_timer(REQUEST_GRACE, step.now + step.rules.policy.request_grace)


# The order a journey's records are applied in when several were parked:
# decisions and cancellations, then departure, arrival, discharge, follow-ups.
_PHASE = {ReferralDecision: 0, ReferralCancelled: 0, PatientDeparted: 1, PatientArrived: 2,
          DischargeSummarySubmitted: 3, FollowUpRecorded: 4}


def _drain(step: _Step) -> None:
    """Apply what was parked and can be now, in journey order; refuse what
    never can be (in an ended case every handler answers, none parks)."""
    progress = True
    while progress and step.case.state is not None:
        progress = False
        for p in sorted(step.case.parked, key=lambda p: _PHASE[type(p.fact)]):
            verdict = _handle(step, p.fact, p.sender)
            if verdict is PARK:
                continue
            # A handler decides before it changes anything: only an applied
            # record has changed the case. Either way it leaves the park.
            step.update(parked=tuple(q for q in step.case.parked if q.fact_id != p.fact_id))
            if isinstance(verdict, tuple):
                step.reject(p.fact_id, [verdict])
            progress = True
            break


# --- opening a case ---------------------------------------------------------


def _open_problems(request: ReferralRequested, parent: Case | None, rules: Rules,
                   sender: str | None) -> list[Problem]:
    if sender is not None and sender != request.from_institution:
        return [("from_institution", Refusal.forbidden_institution)]
    if request.parent_referral_id is None:
        return referral_problems(request, rules.refdata)
    if parent is None or parent.referral_id != request.parent_referral_id:
        return [("parent_referral_id", Refusal.parent_not_found)]
    if parent.state not in (CaseState.declined, CaseState.expired) or \
            parent.direction not in rules.policy.reroute_directions:
        return [("parent_referral_id", Refusal.parent_not_reroutable)]
    if parent.rerouted_to is not None:
        return [("parent_referral_id", Refusal.already_rerouted)]
    p = parent.opened_request()
    if (p.from_institution, p.patient_ref, p.direction) != \
            (request.from_institution, request.patient_ref, request.direction):
        return [("parent_referral_id", Refusal.parent_mismatch)]
    if request.to_institution in parent.tried:
        return [("to_institution", Refusal.already_tried)]
    return referral_problems(request, rules.refdata, rerouted=True)


def _open_case(step: _Step, request: ReferralRequested, parent: Case | None,
               at_once: bool = False) -> None:
    policy, now = step.rules.policy, step.now
    validity = policy.validity_for(request.chronic_class)
    valid_until = add_months(request.requested_at, validity.months)
    accept_by = now + policy.acceptance[request.urgency]
    root = parent.root_referral_id if parent is not None else request.referral_id
    step.update(state=CaseState.requested, request=request, root_referral_id=root,
                tried=(*(parent.tried if parent else ()), request.to_institution),
                opened_at=now, accept_by=accept_by, valid_until=valid_until,
                admissions_allowed=validity.admissions)
    step.cancel_timer(REQUEST_GRACE)
    step.set_timer(ACCEPTANCE, accept_by)
    step.set_timer(VALIDITY, valid_until)
    if parent is not None:
        step.emit(ReferralRerouted(
            referral_id=parent.referral_id, root_referral_id=root,
            child_referral_id=request.referral_id, from_institution=request.from_institution,
            to_institution=request.to_institution, at_once=at_once, rerouted_at=now))
    step.emit(ReferralOpened(
        referral_id=request.referral_id, from_institution=request.from_institution,
        to_institution=request.to_institution, direction=request.direction,
        patient_ref=request.patient_ref, reason=request.reason, urgency=request.urgency,
        required_capability=request.required_capability, chronic_class=request.chronic_class,
        attached_results=request.attached_results,
        parent_referral_id=request.parent_referral_id, root_referral_id=root,
        valid_until=valid_until, admissions_allowed=validity.admissions, accept_by=accept_by,
        opened_at=now))


# --- intake records ---------------------------------------------------------

# Which end of the referral may record each kind of record.
_RECORDED_BY = {
    ReferralDecision: "to", PatientDeparted: "from", PatientArrived: "to",
    DischargeSummarySubmitted: "to", FollowUpRecorded: "to", ReferralCancelled: "from",
}


def _handle(step: _Step, fact: IntakeFact, sender: str | None) -> Verdict:
    case = step.case
    if case.state is None:
        return PARK
    if isinstance(fact, ReferralRequested):
        return None if fact == case.request else ("referral_id", Refusal.referral_id_in_use)
    if sender is not None:
        end = _RECORDED_BY[type(fact)]
        if sender != (case.to_institution if end == "to" else case.from_institution):
            return ("referral_id", Refusal.forbidden_institution)
    if isinstance(fact, ReferralDecision):
        return _decision(step, fact)
    if isinstance(fact, PatientDeparted):
        return _departed(step, fact)
    if isinstance(fact, PatientArrived):
        return _arrived(step, fact)
    if isinstance(fact, DischargeSummarySubmitted):
        return _discharged(step, fact)
    if isinstance(fact, FollowUpRecorded):
        return _follow_up(step, fact)
    return _cancelled(step, fact)


def _ends(case: Case) -> dict[str, str]:
    return {"referral_id": case.referral_id, "from_institution": case.from_institution,
            "to_institution": case.to_institution}


def _decision(step: _Step, d: ReferralDecision) -> Verdict:
    case, s = step.case, step.case.state
    if d.decision is Decision.accept:
        if s is CaseState.requested:
            step.update(state=CaseState.accepted, accepted_at=d.decided_at)
            step.cancel_timer(ACCEPTANCE)
            step.emit(ReferralAccepted(**_ends(case), accepted_by=d.decided_by,
                                       accepted_at=d.decided_at, after_departure=False))
            return None
        if s in (CaseState.in_transit, CaseState.received) and case.paperwork_pending:
            step.update(paperwork_pending=False, accepted_at=d.decided_at)
            step.cancel_timer(PAPERWORK)
            step.emit(ReferralAccepted(**_ends(case), accepted_by=d.decided_by,
                                       accepted_at=d.decided_at, after_departure=True))
            _close_downward(step, d.decided_at)
            return None
        if s in (CaseState.accepted, CaseState.in_transit, CaseState.received, CaseState.closed):
            return None
        if s is CaseState.declined:
            return ("decision", Refusal.already_declined)
        return ("referral_id", ended(s))
    # decline
    if s is CaseState.requested:
        if d.reason is None:
            return ("reason", Refusal.decline_reason_missing)
        step.update(state=CaseState.declined)
        step.cancel_timers()
        step.emit(ReferralDeclined(**_ends(case), reason=d.reason,
                                   alternative_institution=d.alternative_institution,
                                   declined_by=d.decided_by, declined_at=d.decided_at))
        _reroute(step, d.alternative_institution)
        return None
    if s is CaseState.declined:
        return None
    if s is CaseState.accepted:
        return ("decision", Refusal.already_accepted)
    if s in (CaseState.in_transit, CaseState.received):
        return ("decision", Refusal.patient_departed)
    return ("referral_id", ended(s))


def _start_transit(step: _Step, departed_at: datetime) -> None:
    transit = step.rules.policy.transit[step.case.urgency]
    step.cancel_timer(ACCEPTANCE)
    step.cancel_timer(VALIDITY)
    step.set_timer(TRANSIT_OVERDUE, departed_at + transit.overdue)
    step.set_timer(NOT_RECEIVED, departed_at + transit.lost)


def _departed(step: _Step, d: PatientDeparted) -> Verdict:
    case, s = step.case, step.case.state
    if s is CaseState.requested and case.urgency is not Urgency.emergency:
        return PARK  # the acceptance is on its way, or the case will end
    if s in (CaseState.requested, CaseState.accepted):
        pending = s is CaseState.requested  # an emergency that left first
        step.update(state=CaseState.in_transit, departed_at=d.departed_at,
                    paperwork_pending=pending)
        _start_transit(step, d.departed_at)
        if pending:
            step.set_timer(PAPERWORK, d.departed_at + step.rules.policy.paperwork_reminder)
        step.emit(PatientInTransit(
            **_ends(case), departed_at=d.departed_at, inferred=False, paperwork_pending=pending,
            overdue_at=d.departed_at + step.rules.policy.transit[case.urgency].overdue))
        return None
    if s in (CaseState.received, CaseState.closed) and case.departure_inferred:
        if case.arrived_at is not None and d.departed_at > case.arrived_at:
            return ("departed_at", Refusal.departure_after_arrival)
        step.update(departed_at=d.departed_at, departure_inferred=False)  # fills in the record
        return None
    if s in (CaseState.in_transit, CaseState.received, CaseState.closed):
        return None
    return ("referral_id", ended(s))


def _arrived(step: _Step, a: PatientArrived) -> Verdict:
    case, s = step.case, step.case.state
    if s in (CaseState.received, CaseState.closed):
        return None
    if s is CaseState.requested and case.urgency is not Urgency.emergency:
        return PARK
    if s not in (CaseState.requested, CaseState.accepted, CaseState.in_transit):
        return ("referral_id", ended(s))
    if case.valid_until is not None and a.arrived_at > case.valid_until:
        return ("arrived_at", Refusal.validity_ended)
    if s is CaseState.in_transit and case.departed_at is not None and \
            a.arrived_at < case.departed_at:
        return ("arrived_at", Refusal.departure_after_arrival)
    inferred = s is not CaseState.in_transit
    pending = case.paperwork_pending or s is CaseState.requested
    if inferred:
        step.cancel_timer(ACCEPTANCE)
        step.cancel_timer(VALIDITY)
        step.emit(PatientInTransit(**_ends(case), departed_at=None, inferred=True,
                                   paperwork_pending=pending, overdue_at=None))
        if s is CaseState.requested:  # an emergency that arrived first
            step.set_timer(PAPERWORK, a.arrived_at + step.rules.policy.paperwork_reminder)
    step.cancel_timer(TRANSIT_OVERDUE)
    step.cancel_timer(NOT_RECEIVED)
    step.update(state=CaseState.received, arrived_at=a.arrived_at, paperwork_pending=pending,
                departure_inferred=inferred)
    step.set_timer(NOT_CLOSED, a.arrived_at + step.rules.policy.not_closed)
    step.emit(PatientReceived(**_ends(case), arrived_at=a.arrived_at,
                              departure_inferred=inferred, paperwork_pending=pending))
    _close_downward(step, a.arrived_at)
    return None


def _close_downward(step: _Step, at: datetime) -> None:
    """A downward referral closes when the township has the patient and the
    paperwork is complete; closing schedules the follow-up rounds."""
    case = step.case
    if case.direction is not Direction.down or case.state is not CaseState.received \
            or case.paperwork_pending:
        return
    policy = step.rules.policy
    step.cancel_timers()
    request = case.opened_request()
    plan = request.care_plan
    days = sorted(set(plan.follow_up_days if plan and plan.follow_up_days
                      else (r.day for r in policy.rounds)))
    rounds = tuple(FollowUpRound(day, at + timedelta(days=day),
                                 at + timedelta(days=day) + policy.missed_after(day))
                   for day in days)
    step.update(state=CaseState.closed, closed_at=at, outcome=ClosureOutcome.care_taken_over,
                rounds=rounds)
    step.emit(ReferralClosed(**_ends(case), direction=Direction.down,
                             outcome=ClosureOutcome.care_taken_over, discharge_summary_id=None,
                             closed_at=at))
    for r in rounds:
        step.set_timer(follow_up_timer(r.day), r.missed_after)
        step.emit(FollowUpScheduled(**_ends(case), handed_over_by=request.handed_over_by,
                                    round_day=r.day, due_at=r.due_at, missed_after=r.missed_after))


def _discharged(step: _Step, d: DischargeSummarySubmitted) -> Verdict:
    case, s = step.case, step.case.state
    if case.direction is not Direction.up:
        return ("referral_id", Refusal.not_upward)
    if s is CaseState.closed:
        return None if d.summary_id == case.discharge_summary_id else \
            ("summary_id", Refusal.already_closed)
    if s in (CaseState.requested, CaseState.accepted, CaseState.in_transit) or \
            (s is CaseState.received and case.paperwork_pending):
        return PARK  # waits for the arrival, or for the paperwork
    if s is not CaseState.received:
        return ("referral_id", ended(s))
    step.cancel_timers()
    step.update(state=CaseState.closed, closed_at=d.discharged_at, outcome=d.outcome,
                discharge_summary_id=d.summary_id)
    step.emit(ReferralClosed(**_ends(case), direction=Direction.up, outcome=d.outcome,
                             discharge_summary_id=d.summary_id, closed_at=d.discharged_at))
    return None


def _follow_up(step: _Step, f: FollowUpRecorded) -> Verdict:
    case, s = step.case, step.case.state
    if case.direction is not Direction.down:
        return ("referral_id", Refusal.no_follow_up_plan)
    if s in (CaseState.requested, CaseState.accepted, CaseState.in_transit, CaseState.received):
        return PARK  # the township saw him before its arrival record came through
    if s is not CaseState.closed:
        return ("referral_id", ended(s))
    found = next((r for r in case.rounds if r.day == f.round_day), None)
    if found is None:
        return ("round_day", Refusal.unknown_round)
    if found.state is RoundState.done:
        return None
    step.update(rounds=tuple(replace(r, state=RoundState.done) if r.day == f.round_day else r
                             for r in case.rounds))
    step.cancel_timer(follow_up_timer(f.round_day))
    step.emit(FollowUpDone(**_ends(case), round_day=f.round_day, finding=f.finding,
                           seen_at=f.seen_at, after_missed=found.state is RoundState.missed))
    return None


def _cancelled(step: _Step, c: ReferralCancelled) -> Verdict:
    case, s = step.case, step.case.state
    if s in (CaseState.requested, CaseState.accepted):
        step.cancel_timers()
        step.update(state=CaseState.withdrawn)
        step.emit(ReferralWithdrawn(**_ends(case), reason=c.reason, previous_state=s,
                                    withdrawn_at=c.cancelled_at))
        return None
    if s is CaseState.withdrawn:
        return None
    if s in (CaseState.in_transit, CaseState.received):
        return ("referral_id", Refusal.patient_departed)
    return ("referral_id", ended(s))


# --- re-routing -------------------------------------------------------------


def _reroute(step: _Step, alternative: str | None) -> None:
    """After a decline or expiry: propose the next capable institution to the
    sender, or, for the urgencies the policy names, open the child at once."""
    case, policy = step.case, step.rules.policy
    request = case.opened_request()
    if case.direction not in policy.reroute_directions:
        return
    proposed = next_candidate(request, case.tried, step.rules.refdata, policy, alternative)
    if proposed is None:
        return
    if case.urgency not in policy.reroute_at_once:
        step.update(proposed_institution=proposed)
        step.emit(ReferralRerouteProposed(
            referral_id=case.referral_id,
            root_referral_id=case.root_referral_id or case.referral_id,
            from_institution=case.from_institution, to_institution=case.to_institution,
            proposed_institution=proposed, proposed_at=step.now))
        return
    child_request = replace(request, referral_id=derived_id("reroute", case.referral_id),
                            to_institution=proposed, parent_referral_id=case.referral_id)
    child = _Step(Case(child_request.referral_id), step.rules, step.now)
    _open_case(child, child_request, case, at_once=True)
    step.update(rerouted_to=child_request.referral_id)
    step.merge(child)


# --- timers -----------------------------------------------------------------


def _lose(step: _Step, reason: LostReason, at: datetime) -> None:
    step.cancel_timers()
    step.update(state=CaseState.lost, lost_reason=reason)
    step.emit(ReferralLost(**_ends(step.case), reason=reason, lost_at=at))


def _on_timer(case: Case, t: TimerFired, rules: Rules, now: datetime) -> Outcome:
    timers = dict(case.timers)
    if timers.get(t.name) != t.due_at:  # cancelled, replaced, or already fired
        return Outcome(case)
    del timers[t.name]
    step = _Step(replace(case, timers=tuple(sorted(timers.items()))), rules, now)
    s, at = case.state, t.due_at

    if t.name == REQUEST_GRACE:
        for p in case.parked:
            step.reject(p.fact_id, [("referral_id", Refusal.prerequisite_missing)])
        step.update(parked=())
        return step.outcome(keep=False)
    if t.name == ACCEPTANCE and s is CaseState.requested:
        step.cancel_timers()
        step.update(state=CaseState.expired)
        step.emit(ReferralExpired(**_ends(case), accept_by=at, expired_at=at))
        _reroute(step, None)
    elif t.name == VALIDITY and s is CaseState.accepted:
        _lose(step, LostReason.never_departed, at)
    elif t.name == TRANSIT_OVERDUE and s is CaseState.in_transit:
        step.emit(PatientInTransitOverdue(**_ends(case), departed_at=case.departed_at or at,
                                          overdue_at=at))
    elif t.name == NOT_RECEIVED and s is CaseState.in_transit:
        _lose(step, LostReason.not_received, at)
    elif t.name == NOT_CLOSED and s is CaseState.received:
        _lose(step, LostReason.not_closed, at)
    elif t.name == PAPERWORK and case.paperwork_pending and not case.terminal:
        step.emit(ReferralPaperworkOverdue(**_ends(case),
                                           left_at=case.departed_at or case.arrived_at or at,
                                           reminded_at=at))
    elif t.name.startswith(FOLLOW_UP) and s is CaseState.closed:
        day = int(t.name.removeprefix(FOLLOW_UP))
        r = next((r for r in case.rounds if r.day == day), None)
        if r is not None and r.state is RoundState.scheduled:
            step.update(rounds=tuple(replace(x, state=RoundState.missed) if x.day == day else x
                                     for x in case.rounds))
            step.emit(FollowUpMissed(**_ends(case),
                                     handed_over_by=case.opened_request().handed_over_by,
                                     round_day=day, due_at=r.due_at, missed_at=at))
    _drain(step)
    return step.outcome()

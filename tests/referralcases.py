"""Test support for the referral state machine: build intake records, and drive
a world of cases (a parent, its children) through facts and timers the way
the service will: keep each case, collect what it publishes, keep the timers
it sets and fire them."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from yigongti_contracts.refdata import Capability
from yigongti_referral.case import CancelTimer, Case, Outcome, Rejection, Rules, SetTimer
from yigongti_referral.codes import (
    CancelReason,
    ClosureOutcome,
    Decision,
    DeclineReason,
    Direction,
    DownwardReason,
    FollowUpFinding,
    UpwardReason,
    Urgency,
)
from yigongti_referral.domain import apply
from yigongti_referral.events import Event
from yigongti_referral.facts import (
    CarePlan,
    DischargeSummarySubmitted,
    FollowUpRecorded,
    PatientArrived,
    PatientDeparted,
    ReferralCancelled,
    ReferralDecision,
    ReferralRequested,
    TimerFired,
)

RULES = Rules.load()
T0 = datetime(2025, 1, 10, 8, 0, tzinfo=UTC)
PATIENT = "v1:" + "ab" * 32
TOWNSHIP = "652301-B02"  # 大西渠镇卫生院, the STEMI of the seeds
COUNTY = "652301-H01"  # 昌吉市人民医院总医院, the county chest-pain centre
DAFENG = "652323-B01"  # 呼图壁县总医院大丰镇分院, the downward referral of the seeds
HUTUBI = "652323-H01"


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def up(referral_id: str = "R1", *, frm: str = TOWNSHIP, to: str = COUNTY,
       urgency: Urgency = Urgency.emergency,
       capability: Capability | None = Capability.chest_pain_centre, **kw) -> ReferralRequested:
    fields = dict(referral_id=referral_id, direction=Direction.up, from_institution=frm,
                  to_institution=to, patient_ref=PATIENT,
                  reason=UpwardReason.critical_beyond_capability, urgency=urgency,
                  requested_by="doc-t1", requested_at=T0, required_capability=capability,
                  attached_results=("lab:CTNI-1",))
    fields.update(kw)
    return ReferralRequested(**fields)


def down(referral_id: str = "D1", *, frm: str = HUTUBI, to: str = DAFENG,
         urgency: Urgency = Urgency.routine, **kw) -> ReferralRequested:
    fields = dict(referral_id=referral_id, direction=Direction.down, from_institution=frm,
                  to_institution=to, patient_ref=PATIENT,
                  reason=DownwardReason.stable_rehabilitation, urgency=urgency,
                  requested_by="doc-c1", requested_at=T0,
                  care_plan=CarePlan(diagnoses=("M47.8",), medications=("XN02BEA",),
                                     warning_signs=("numbness",)),
                  handed_over_by="doc-c1")
    fields.update(kw)
    return ReferralRequested(**fields)


def accept(rid: str = "R1", at: datetime = minutes(10)) -> ReferralDecision:
    return ReferralDecision(rid, Decision.accept, "coord-1", at)


def decline(rid: str = "R1", at: datetime = minutes(10),
            reason: DeclineReason | None = DeclineReason.no_bed,
            alternative: str | None = None) -> ReferralDecision:
    return ReferralDecision(rid, Decision.decline, "coord-1", at, reason, alternative)


def departed(rid: str = "R1", at: datetime = minutes(15)) -> PatientDeparted:
    return PatientDeparted(rid, at)


def arrived(rid: str = "R1", at: datetime = minutes(60)) -> PatientArrived:
    return PatientArrived(rid, at)


def discharged(rid: str = "R1", at: datetime = minutes(60 * 24 * 6),
               outcome: ClosureOutcome = ClosureOutcome.transferred_to_primary_care,
               summary_id: str = "DS-1") -> DischargeSummarySubmitted:
    return DischargeSummarySubmitted(rid, summary_id, outcome, at)


def follow_up(rid: str = "D1", day: int = 7, at: datetime | None = None) -> FollowUpRecorded:
    return FollowUpRecorded(rid, day, FollowUpFinding.stable,
                            at or minutes(60 * 24 * (day + 1)))


def cancelled(rid: str = "R1", at: datetime = minutes(5)) -> ReferralCancelled:
    return ReferralCancelled(rid, CancelReason.condition_improved, at)


_ids = itertools.count(1)


@dataclass
class World:
    """Cases by referral_id, with everything they published and refused."""

    rules: Rules = RULES
    now: datetime = T0
    cases: dict[str, Case] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    timers: dict[tuple[str, str], datetime] = field(default_factory=dict)
    fired: list[TimerFired] = field(default_factory=list)
    last: Outcome | None = None

    def _take(self, out: Outcome, referral_id: str) -> Outcome:
        for case in (out.case, *out.others):
            if case is not None:
                self.cases[case.referral_id] = case
        if out.case is None:
            self.cases.pop(referral_id, None)
        self.events += out.events
        self.rejections += out.rejections
        for t in out.timers:
            if isinstance(t, SetTimer):
                self.timers[(t.referral_id, t.name)] = t.due_at
            elif isinstance(t, CancelTimer):
                self.timers.pop((t.referral_id, t.name), None)
        self.last = out
        return out

    def send(self, fact, *, fact_id: str | None = None, sender: str | None = None,
             now: datetime | None = None) -> Outcome:
        self.now = max(self.now, now or self.now)
        parent_id = getattr(fact, "parent_referral_id", None)
        out = apply(self.cases.get(fact.referral_id), fact, now=self.now, rules=self.rules,
                    fact_id=fact_id or f"ce-{next(_ids)}", sender=sender,
                    parent=self.cases.get(parent_id) if parent_id else None)
        return self._take(out, fact.referral_id)

    def fire(self, referral_id: str, name: str, *, due: datetime | None = None) -> Outcome:
        """Fire a timer (at its due time unless `due` says otherwise: a stale copy)."""
        due_at = due or self.timers.pop((referral_id, name))
        self.now = max(self.now, due_at)
        timer = TimerFired(referral_id, name, due_at)
        self.fired.append(timer)
        return self._take(apply(self.cases.get(referral_id), timer, now=self.now,
                                rules=self.rules), referral_id)

    def fire_all(self, limit: int = 1000) -> None:
        """Fire every timer in due order, including those the firings set."""
        for _ in range(limit):
            if not self.timers:
                return
            (rid, name), _due = min(self.timers.items(), key=lambda kv: (kv[1], kv[0]))
            self.fire(rid, name)
        raise AssertionError("timers never ran out")

    def state(self, referral_id: str):
        return self.cases[referral_id].state

    def types(self, referral_id: str | None = None) -> list[str]:
        return [type(e).__name__ for e in self.events
                if referral_id is None or getattr(e, "referral_id", None) == referral_id]

    def of(self, kind: type, referral_id: str | None = None) -> list:
        return [e for e in self.events if isinstance(e, kind)
                and (referral_id is None or e.referral_id == referral_id)]

    def reasons(self) -> list[str]:
        return [r.reason.value for r in self.rejections]


def opened(*facts, world: World | None = None, request: ReferralRequested | None = None,
           **kw) -> World:
    """A world with `request` (default: the STEMI upward referral) applied,
    then `facts` in order."""
    w = world or World()
    w.send(request or up(**kw))
    for f in facts:
        w.send(f)
    return w



"""What a referral case holds, and what one transition returns (domain.py
decides the transitions). Plain frozen dataclasses: the service stores a case
as one row and writes an outcome in one transaction (new state, outbox events,
timers, IntakeRejected answers)."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime

from yigongti_contracts.refdata import RefData
from yigongti_contracts.refdata import load as load_refdata

from .codes import (
    TERMINAL,
    CaseState,
    ClosureOutcome,
    Direction,
    LostReason,
    Refusal,
    RoundState,
    Urgency,
)
from .events import Event
from .facts import IntakeFact, ReferralRequested
from .policy import Policy, load_policy

# Timer names (one of each per case; follow-up rounds add one per day).
ACCEPTANCE = "acceptance"  # → expired
VALIDITY = "validity"  # accepted, never departed → lost
TRANSIT_OVERDUE = "transit_overdue"  # → the in-transit alert
NOT_RECEIVED = "not_received"  # → lost
NOT_CLOSED = "not_closed"  # → lost
PAPERWORK = "paperwork"  # → the paperwork reminder
REQUEST_GRACE = "request_grace"  # records parked without a request → refused
FOLLOW_UP = "follow_up_day_"  # + the round's day → missed


def follow_up_timer(day: int) -> str:
    return f"{FOLLOW_UP}{day}"


@dataclass(frozen=True)
class Rules:
    """The reference data and the policy tables the machine decides by."""

    refdata: RefData
    policy: Policy

    @classmethod
    def load(cls) -> Rules:
        return cls(load_refdata(), load_policy())


@dataclass(frozen=True)
class Parked:
    """A record that waits in the case for what it depends on."""

    fact: IntakeFact
    fact_id: str  # the record's ce_id
    sender: str | None  # the institution of the terminal that signed it


@dataclass(frozen=True)
class FollowUpRound:
    day: int
    due_at: datetime
    missed_after: datetime
    state: RoundState = RoundState.scheduled


@dataclass(frozen=True)
class Case:
    referral_id: str
    state: CaseState | None = None  # None: records parked, no request yet
    request: ReferralRequested | None = None
    root_referral_id: str | None = None
    tried: tuple[str, ...] = ()  # receivers tried by the chain, this one last
    paperwork_pending: bool = False
    opened_at: datetime | None = None
    accept_by: datetime | None = None
    valid_until: datetime | None = None
    admissions_allowed: int | None = None
    accepted_at: datetime | None = None
    departed_at: datetime | None = None
    departure_inferred: bool = False
    arrived_at: datetime | None = None
    closed_at: datetime | None = None
    outcome: ClosureOutcome | None = None
    discharge_summary_id: str | None = None
    lost_reason: LostReason | None = None
    rounds: tuple[FollowUpRound, ...] = ()
    timers: tuple[tuple[str, datetime], ...] = ()  # active: (name, due), by name
    parked: tuple[Parked, ...] = ()
    proposed_institution: str | None = None  # a re-route awaiting the sender
    rerouted_to: str | None = None  # the child case

    def opened_request(self) -> ReferralRequested:
        if self.request is None:
            raise ValueError(f"referral {self.referral_id} has no request yet")
        return self.request

    @property
    def direction(self) -> Direction:
        return self.opened_request().direction

    @property
    def urgency(self) -> Urgency:
        return self.opened_request().urgency

    @property
    def from_institution(self) -> str:
        return self.opened_request().from_institution

    @property
    def to_institution(self) -> str:
        return self.opened_request().to_institution

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True)
class SetTimer:
    referral_id: str
    name: str
    due_at: datetime


@dataclass(frozen=True)
class CancelTimer:
    referral_id: str
    name: str


@dataclass(frozen=True)
class Rejection:
    """An intake record refused: the service answers it with IntakeRejected."""

    referral_id: str
    fact_id: str
    reason: Refusal
    fields: tuple[tuple[str, Refusal], ...]


@dataclass(frozen=True)
class Outcome:
    case: Case | None  # None: nothing to keep (an unopened case whose records were refused)
    events: tuple[Event, ...] = ()
    timers: tuple[SetTimer | CancelTimer, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    others: tuple[Case, ...] = ()  # a re-routed parent, a child opened at once


def add_months(at: datetime, months: int) -> datetime:
    """`at` plus calendar months, the day clamped to the month's end."""
    month0 = at.month - 1 + months
    year, month = at.year + month0 // 12, month0 % 12 + 1
    return at.replace(year=year, month=month,
                      day=min(at.day, calendar.monthrange(year, month)[1]))

"""What the referral state machine reacts to: the intake records of
`referral.intake.v1` (issue 12 item 1), the upstream `CriticalFindingRaised`,
and a fired timer. Plain dataclasses named and shaped as the contracts will be,
so the pydantic models can replace them field for field. No free text: the
care plan's prose and the discharge summary stay in the service's database;
records carry codes and references."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from yigongti_contracts.refdata import Capability

from .codes import (
    CancelReason,
    ChronicClass,
    ClosureOutcome,
    Decision,
    DeclineReason,
    Direction,
    DownwardReason,
    FollowUpFinding,
    UpwardReason,
    Urgency,
)


@dataclass(frozen=True)
class CarePlan:
    """The continuing-care plan of a downward referral, as codes."""

    diagnoses: tuple[str, ...]  # ICD-10
    medications: tuple[str, ...]  # drug codes
    warning_signs: tuple[str, ...]  # codes
    follow_up_days: tuple[int, ...] = ()  # empty: the default rounds (policy/follow_up.yaml)


@dataclass(frozen=True)
class ReferralRequested:
    referral_id: str
    direction: Direction
    from_institution: str
    to_institution: str
    patient_ref: str
    reason: UpwardReason | DownwardReason
    urgency: Urgency
    requested_by: str  # clinician id
    requested_at: datetime
    required_capability: Capability | None = None
    chronic_class: ChronicClass | None = None
    attached_results: tuple[str, ...] = ()  # references to recognised results and studies
    care_plan: CarePlan | None = None  # downward
    handed_over_by: str | None = None  # downward: the county doctor who hands over
    parent_referral_id: str | None = None  # a confirmed re-route


@dataclass(frozen=True)
class ReferralDecision:
    referral_id: str
    decision: Decision
    decided_by: str
    decided_at: datetime
    reason: DeclineReason | None = None
    alternative_institution: str | None = None


@dataclass(frozen=True)
class PatientDeparted:
    referral_id: str
    departed_at: datetime


@dataclass(frozen=True)
class PatientArrived:
    referral_id: str
    arrived_at: datetime


@dataclass(frozen=True)
class DischargeSummarySubmitted:
    referral_id: str
    summary_id: str  # the summary itself stays in the service's database
    outcome: ClosureOutcome
    discharged_at: datetime


@dataclass(frozen=True)
class FollowUpRecorded:
    referral_id: str
    round_day: int
    finding: FollowUpFinding
    seen_at: datetime


@dataclass(frozen=True)
class ReferralCancelled:
    referral_id: str
    reason: CancelReason
    cancelled_at: datetime


@dataclass(frozen=True)
class TimerFired:
    """A durable timer the state machine set, fired by the service's poller."""

    referral_id: str
    name: str
    due_at: datetime


@dataclass(frozen=True)
class CriticalFindingRaised:
    """The diagnosis service's event (issue 10), as referral reads it."""

    request_id: str
    patient_ref: str
    requesting_institution: str
    modality: str
    conclusion_code: str
    raised_at: datetime


IntakeFact = (ReferralRequested | ReferralDecision | PatientDeparted | PatientArrived
              | DischargeSummarySubmitted | FollowUpRecorded | ReferralCancelled)

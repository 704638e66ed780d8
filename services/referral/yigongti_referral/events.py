"""What the referral service publishes on `referral.events.v1` (issue 12 item 1),
as plain dataclasses named and shaped as the contracts will be. Every event
about a case names both ends, `from_institution` (the sender) and
`to_institution` (the receiver), so each feed gets its own, and the sender is
told of every terminal state. Kafka key: `referral_id` (`suggestion_id` for a
suggestion)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from yigongti_contracts.refdata import Capability

from .codes import (
    CancelReason,
    CaseState,
    ChronicClass,
    ClosureOutcome,
    DeclineReason,
    Direction,
    DownwardReason,
    FollowUpFinding,
    LostReason,
    UpwardReason,
    Urgency,
)


@dataclass(frozen=True)
class ReferralSuggested:
    suggestion_id: str
    patient_ref: str
    from_institution: str  # the institution that requested the study
    to_institution: str  # the nearest capable institution
    capability: Capability
    finding: str  # the trigger (policy/suggestions.yaml)
    modality: str
    conclusion_code: str
    urgency: Urgency
    diagnosis_request_id: str
    finding_raised_at: datetime
    suggested_at: datetime


@dataclass(frozen=True)
class ReferralOpened:
    referral_id: str
    from_institution: str
    to_institution: str
    direction: Direction
    patient_ref: str
    reason: UpwardReason | DownwardReason
    urgency: Urgency
    required_capability: Capability | None
    chronic_class: ChronicClass | None
    attached_results: tuple[str, ...]
    parent_referral_id: str | None
    root_referral_id: str
    valid_until: datetime
    admissions_allowed: int | None
    accept_by: datetime
    opened_at: datetime


@dataclass(frozen=True)
class ReferralAccepted:
    referral_id: str
    from_institution: str
    to_institution: str
    accepted_by: str
    accepted_at: datetime
    after_departure: bool  # the paperwork of an emergency that left first


@dataclass(frozen=True)
class ReferralDeclined:
    referral_id: str
    from_institution: str
    to_institution: str
    reason: DeclineReason
    alternative_institution: str | None
    declined_by: str
    declined_at: datetime


@dataclass(frozen=True)
class ReferralExpired:
    referral_id: str
    from_institution: str
    to_institution: str
    accept_by: datetime
    expired_at: datetime


@dataclass(frozen=True)
class ReferralRerouteProposed:
    referral_id: str  # the declined or expired case
    root_referral_id: str
    from_institution: str
    to_institution: str  # who declined or let it expire
    proposed_institution: str
    proposed_at: datetime


@dataclass(frozen=True)
class ReferralRerouted:
    referral_id: str  # the parent
    root_referral_id: str
    child_referral_id: str
    from_institution: str
    to_institution: str  # the child's receiver
    at_once: bool  # an emergency, opened without the sender's confirmation
    rerouted_at: datetime


@dataclass(frozen=True)
class ReferralWithdrawn:
    referral_id: str
    from_institution: str
    to_institution: str
    reason: CancelReason
    previous_state: CaseState  # requested or accepted
    withdrawn_at: datetime


@dataclass(frozen=True)
class PatientInTransit:
    referral_id: str
    from_institution: str
    to_institution: str
    departed_at: datetime | None  # None when inferred from the arrival
    inferred: bool
    paperwork_pending: bool
    overdue_at: datetime | None  # when the in-transit alert fires (None if inferred)


@dataclass(frozen=True)
class PatientInTransitOverdue:
    """The alert for a patient not received within the expected time."""

    referral_id: str
    from_institution: str
    to_institution: str
    departed_at: datetime
    overdue_at: datetime


@dataclass(frozen=True)
class ReferralPaperworkOverdue:
    """The reminder for an emergency that left before its acceptance was recorded."""

    referral_id: str
    from_institution: str
    to_institution: str
    left_at: datetime
    reminded_at: datetime


@dataclass(frozen=True)
class PatientReceived:
    referral_id: str
    from_institution: str
    to_institution: str
    arrived_at: datetime
    departure_inferred: bool
    paperwork_pending: bool


@dataclass(frozen=True)
class ReferralLost:
    referral_id: str
    from_institution: str
    to_institution: str
    reason: LostReason
    lost_at: datetime


@dataclass(frozen=True)
class ReferralClosed:
    referral_id: str
    from_institution: str
    to_institution: str
    direction: Direction
    outcome: ClosureOutcome
    discharge_summary_id: str | None  # upward: the receiver's discharge summary
    closed_at: datetime


@dataclass(frozen=True)
class FollowUpScheduled:
    referral_id: str
    from_institution: str  # the county that handed over
    to_institution: str  # the township that follows up
    handed_over_by: str | None
    round_day: int
    due_at: datetime
    missed_after: datetime


@dataclass(frozen=True)
class FollowUpDone:
    referral_id: str
    from_institution: str
    to_institution: str
    round_day: int
    finding: FollowUpFinding
    seen_at: datetime
    after_missed: bool  # recorded late, after FollowUpMissed went out


@dataclass(frozen=True)
class FollowUpMissed:
    referral_id: str
    from_institution: str
    to_institution: str
    handed_over_by: str | None  # the county doctor who is told
    round_day: int
    due_at: datetime
    missed_at: datetime


Event = (ReferralSuggested | ReferralOpened | ReferralAccepted | ReferralDeclined
         | ReferralExpired | ReferralRerouteProposed | ReferralRerouted | ReferralWithdrawn
         | PatientInTransit | PatientInTransitOverdue | ReferralPaperworkOverdue
         | PatientReceived | ReferralLost | ReferralClosed | FollowUpScheduled | FollowUpDone
         | FollowUpMissed)

# The event that tells the sender a case ended, by its terminal state.
TERMINAL_EVENT = {
    CaseState.closed: ReferralClosed,
    CaseState.declined: ReferralDeclined,
    CaseState.expired: ReferralExpired,
    CaseState.withdrawn: ReferralWithdrawn,
    CaseState.lost: ReferralLost,
}

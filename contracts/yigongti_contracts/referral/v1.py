"""Referral v1 contracts: intake on `referral.intake.v1`, events on
`referral.events.v1` (DESIGN §4; issue 12 item 1), keyed by `referral_id`
(`suggestion_id` for a ReferralSuggested).

Frozen: within v1 only additive, optional changes (compat.py). Codes and ids
only: reasons are the codes of domain-rules §7 (codes.py), the care plan is
diagnoses, drugs and warning signs as codes, and the discharge summary and
any prose stay in the referral service's database. Every event about a case
names both ends, `from_institution` (the sender) and `to_institution` (the
receiver), so each end's feed gets it and the sender is told of every
terminal state.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from ..base import Part, StrictModel
from ..common import Identifier, InstitutionId, PatientRef, UtcDateTime
from ..lab.codes import TestCode
from ..refdata import Capability
from .codes import (
    AttachedRef,
    CancelReason,
    CaseState,
    ChronicClass,
    ClosureOutcome,
    ConclusionCode,
    Decision,
    DeclineReason,
    Direction,
    DownwardReason,
    DrugCode,
    FindingCode,
    FollowUpFinding,
    Icd10Code,
    LostReason,
    ModalityCode,
    UpwardReason,
    Urgency,
    WarningSign,
)

FROZEN = True


def _unique(items: tuple, what: str) -> None:
    if len(set(items)) != len(items):
        raise ValueError(f"{what} must be unique")


class _Referral(StrictModel):
    KEY_FIELD: ClassVar[str] = "referral_id"


class CarePlan(Part):
    """The continuing-care plan of a downward referral, as codes; its prose
    stays with the county."""

    diagnoses: tuple[Icd10Code, ...] = Field(min_length=1, max_length=20)
    medications: tuple[DrugCode, ...] = Field(default=(), max_length=50)
    warning_signs: tuple[WarningSign, ...] = Field(default=(), max_length=20)
    follow_up_days: tuple[int, ...] = Field(
        default=(), max_length=10, description="Days after the hand-over of each follow-up "
        "round; empty: the service's default rounds (day 7 and day 30).")

    @model_validator(mode="after")
    def _distinct(self) -> CarePlan:
        _unique(self.diagnoses, "diagnoses")
        _unique(self.follow_up_days, "follow_up_days")
        if any(not 1 <= d <= 365 for d in self.follow_up_days):
            raise ValueError("follow_up_days must be within 1..365")
        return self


# --- intake from clinics and coordinators -------------------------------------------


class ReferralRequested(_Referral):
    """A clinician refers a patient up or down (→ ServiceRequest + Task). A
    request naming `parent_referral_id` confirms a proposed re-route."""

    CE_TYPE: ClassVar[str] = "yigongti.referral.requested.v1"

    referral_id: Identifier
    direction: Direction
    from_institution: InstitutionId
    to_institution: InstitutionId
    patient_ref: PatientRef
    reason: UpwardReason | DownwardReason = Field(
        description="An upward reason for direction up, a downward one for down.")
    urgency: Urgency
    requested_by: Identifier
    requested_at: UtcDateTime
    required_capability: Capability | None = None
    chronic_class: ChronicClass | None = Field(
        default=None, description="Extends the referral's validity (domain-rules §7).")
    attached_results: tuple[AttachedRef, ...] = Field(default=(), max_length=50)
    care_plan: CarePlan | None = Field(default=None, description="Required going down.")
    handed_over_by: Identifier | None = Field(
        default=None, description="Down: the county doctor who hands over and is told of "
        "missed follow-ups.")
    parent_referral_id: Identifier | None = Field(
        default=None, description="The declined or expired referral this re-routes.")

    @model_validator(mode="after")
    def _distinct(self) -> ReferralRequested:
        _unique(self.attached_results, "attached_results")
        return self


class ReferralDecision(_Referral):
    """The receiver accepts or declines (a decline gives its reason)."""

    CE_TYPE: ClassVar[str] = "yigongti.referral.decision.v1"

    referral_id: Identifier
    decision: Decision
    decided_by: Identifier
    decided_at: UtcDateTime
    reason: DeclineReason | None = None
    alternative_institution: InstitutionId | None = Field(
        default=None, description="A decline may name where to go instead.")


class PatientDeparted(_Referral):
    CE_TYPE: ClassVar[str] = "yigongti.referral.patient.departed.v1"

    referral_id: Identifier
    departed_at: UtcDateTime


class PatientArrived(_Referral):
    CE_TYPE: ClassVar[str] = "yigongti.referral.patient.arrived.v1"

    referral_id: Identifier
    arrived_at: UtcDateTime


class DischargeSummarySubmitted(_Referral):
    """The receiver of an upward referral closes it: the outcome and a reference
    to the discharge summary (the summary stays in the service's database)."""

    CE_TYPE: ClassVar[str] = "yigongti.referral.discharge_summary.submitted.v1"

    referral_id: Identifier
    summary_id: Identifier
    outcome: ClosureOutcome
    discharged_at: UtcDateTime


class FollowUpRecorded(_Referral):
    """The township saw the patient for a round of the care plan."""

    CE_TYPE: ClassVar[str] = "yigongti.referral.follow_up.recorded.v1"

    referral_id: Identifier
    round_day: int = Field(ge=1, le=365)
    finding: FollowUpFinding
    seen_at: UtcDateTime


class ReferralCancelled(_Referral):
    """The sender withdraws a referral (before the patient leaves)."""

    CE_TYPE: ClassVar[str] = "yigongti.referral.cancelled.v1"

    referral_id: Identifier
    reason: CancelReason
    cancelled_at: UtcDateTime


# --- events --------------------------------------------------------------------------


class _Ends(_Referral):
    referral_id: Identifier
    from_institution: InstitutionId = Field(description="The sender.")
    to_institution: InstitutionId = Field(description="The receiver.")


class ReferralSuggested(StrictModel):
    """A critical finding at an institution that lacks the capability: a
    referral to the nearest capable institution is suggested to the clinic."""

    CE_TYPE: ClassVar[str] = "yigongti.referral.suggested.v1"
    KEY_FIELD: ClassVar[str] = "suggestion_id"

    suggestion_id: Identifier
    patient_ref: PatientRef
    from_institution: InstitutionId = Field(description="The institution that requested "
                                            "the study.")
    to_institution: InstitutionId = Field(description="The nearest capable institution.")
    capability: Capability
    finding: FindingCode
    modality: ModalityCode
    conclusion_code: ConclusionCode
    urgency: Urgency
    diagnosis_request_id: Identifier
    finding_raised_at: UtcDateTime
    suggested_at: UtcDateTime


class ReferralOpened(_Ends):
    CE_TYPE: ClassVar[str] = "yigongti.referral.opened.v1"

    direction: Direction
    patient_ref: PatientRef
    reason: UpwardReason | DownwardReason
    urgency: Urgency
    required_capability: Capability | None = None
    chronic_class: ChronicClass | None = None
    attached_results: tuple[AttachedRef, ...] = Field(default=(), max_length=50)
    parent_referral_id: Identifier | None = None
    root_referral_id: Identifier = Field(description="The first referral of the chain.")
    valid_until: UtcDateTime
    admissions_allowed: int | None = Field(default=None, ge=1, le=99,
                                           description="None: unlimited visits.")
    accept_by: UtcDateTime
    opened_at: UtcDateTime


class ReferralAccepted(_Ends):
    CE_TYPE: ClassVar[str] = "yigongti.referral.accepted.v1"

    accepted_by: Identifier
    accepted_at: UtcDateTime
    after_departure: bool = Field(description="The paperwork of an emergency that left first.")


class ReferralDeclined(_Ends):
    CE_TYPE: ClassVar[str] = "yigongti.referral.declined.v1"

    reason: DeclineReason
    alternative_institution: InstitutionId | None = None
    declined_by: Identifier
    declined_at: UtcDateTime


class ReferralExpired(_Ends):
    """Not accepted by its deadline (by urgency): the sender is told."""

    CE_TYPE: ClassVar[str] = "yigongti.referral.expired.v1"

    accept_by: UtcDateTime
    expired_at: UtcDateTime


class ReferralRerouteProposed(_Ends):
    """After a decline or expiry: the next capable institution, for the sender
    to confirm (a ReferralRequested naming this one as parent)."""

    CE_TYPE: ClassVar[str] = "yigongti.referral.reroute.proposed.v1"

    root_referral_id: Identifier
    proposed_institution: InstitutionId
    proposed_at: UtcDateTime


class ReferralRerouted(_Ends):
    """The parent's chain goes on in `child_referral_id` (to_institution: the child's
    receiver)."""

    CE_TYPE: ClassVar[str] = "yigongti.referral.rerouted.v1"

    root_referral_id: Identifier
    child_referral_id: Identifier
    at_once: bool = Field(description="An emergency, opened without the sender's confirmation.")
    rerouted_at: UtcDateTime


class ReferralWithdrawn(_Ends):
    """The answer to a ReferralCancelled; only from requested or accepted."""

    CE_TYPE: ClassVar[str] = "yigongti.referral.withdrawn.v1"

    reason: CancelReason
    previous_state: CaseState = Field(description="requested or accepted.")
    withdrawn_at: UtcDateTime

    @model_validator(mode="after")
    def _from(self) -> ReferralWithdrawn:
        if self.previous_state not in (CaseState.requested, CaseState.accepted):
            raise ValueError("a referral is withdrawn from requested or accepted only")
        return self


class PatientInTransit(_Ends):
    CE_TYPE: ClassVar[str] = "yigongti.referral.patient.in_transit.v1"

    departed_at: UtcDateTime | None = Field(description="None when inferred from the arrival.")
    inferred: bool
    paperwork_pending: bool = Field(description="An emergency that left before its "
                                    "acceptance was recorded; it cannot close until then.")
    overdue_at: UtcDateTime | None = Field(description="When the in-transit alert fires.")


class PatientInTransitOverdue(_Ends):
    """The alert: a patient in transit not received within the expected time."""

    CE_TYPE: ClassVar[str] = "yigongti.referral.patient.in_transit_overdue.v1"

    departed_at: UtcDateTime
    overdue_at: UtcDateTime


class ReferralPaperworkOverdue(_Ends):
    """The reminder for an emergency whose acceptance is still not recorded."""

    CE_TYPE: ClassVar[str] = "yigongti.referral.paperwork.overdue.v1"

    left_at: UtcDateTime
    reminded_at: UtcDateTime


class PatientReceived(_Ends):
    CE_TYPE: ClassVar[str] = "yigongti.referral.patient.received.v1"

    arrived_at: UtcDateTime
    departure_inferred: bool
    paperwork_pending: bool


class ReferralLost(_Ends):
    """Not received within its time after departure, or never closed, or never
    used: the sender is told."""

    CE_TYPE: ClassVar[str] = "yigongti.referral.lost.v1"

    reason: LostReason
    lost_at: UtcDateTime


class ReferralClosed(_Ends):
    """The closed loop: the sender learns the outcome."""

    CE_TYPE: ClassVar[str] = "yigongti.referral.closed.v1"

    direction: Direction
    outcome: ClosureOutcome
    discharge_summary_id: Identifier | None = Field(
        description="Upward: the receiver's discharge summary (served over HTTP, scoped).")
    closed_at: UtcDateTime


class FollowUpScheduled(_Ends):
    CE_TYPE: ClassVar[str] = "yigongti.referral.follow_up.scheduled.v1"

    handed_over_by: Identifier | None = None
    round_day: int = Field(ge=1, le=365)
    due_at: UtcDateTime
    missed_after: UtcDateTime


class FollowUpDone(_Ends):
    CE_TYPE: ClassVar[str] = "yigongti.referral.follow_up.done.v1"

    round_day: int = Field(ge=1, le=365)
    finding: FollowUpFinding
    seen_at: UtcDateTime
    after_missed: bool = Field(description="Recorded after FollowUpMissed went out.")


class FollowUpMissed(_Ends):
    """A round not recorded in time: the county doctor who handed over is told."""

    CE_TYPE: ClassVar[str] = "yigongti.referral.follow_up.missed.v1"

    handed_over_by: Identifier | None = None
    round_day: int = Field(ge=1, le=365)
    due_at: UtcDateTime
    missed_at: UtcDateTime


class CriticalValueForwarded(_Ends):
    """A lab critical value on a patient in transit, forwarded to the receiver
    for information; only the ordering institution's acknowledgement stops
    the lab's clock."""

    CE_TYPE: ClassVar[str] = "yigongti.referral.critical_value.forwarded.v1"

    patient_ref: PatientRef
    order_id: Identifier
    critical_id: Identifier
    test_code: TestCode
    raised_at: UtcDateTime
    forwarded_at: UtcDateTime


INTAKE: tuple[type[StrictModel], ...] = (
    ReferralRequested, ReferralDecision, PatientDeparted, PatientArrived,
    DischargeSummarySubmitted, FollowUpRecorded, ReferralCancelled,
)
EVENTS: tuple[type[StrictModel], ...] = (
    ReferralSuggested, ReferralOpened, ReferralAccepted, ReferralDeclined, ReferralExpired,
    ReferralRerouteProposed, ReferralRerouted, ReferralWithdrawn, PatientInTransit,
    PatientInTransitOverdue, ReferralPaperworkOverdue, PatientReceived, ReferralLost,
    ReferralClosed, FollowUpScheduled, FollowUpDone, FollowUpMissed, CriticalValueForwarded,
)
CONTRACTS = INTAKE + EVENTS

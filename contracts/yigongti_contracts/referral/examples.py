"""One example of each referral contract (AsyncAPI documents and tests): the
reference scenario's STEMI referred up from a township to the county
chest-pain centre (DESIGN §3 step 4), and a downward referral back to a
township with its care plan (step 7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ..base import StrictModel
from ..refdata import Capability
from . import v1
from .codes import (
    CancelReason,
    CaseState,
    ClosureOutcome,
    Decision,
    DeclineReason,
    Direction,
    DownwardReason,
    FollowUpFinding,
    LostReason,
    UpwardReason,
    Urgency,
)

TOWNSHIP = "652301-B02"  # 大西渠镇卫生院 (the STEMI of the seeds)
COUNTY = "652301-H01"  # 昌吉市人民医院总医院, the county chest-pain centre
PREFECTURE = "652300-P01"  # 昌吉州人民医院
PATIENT = "v1:" + "5d41402abc4b2a76b9719d911017c592" * 2
REFERRAL = "REF-20250115-0001"
DOWN = "REF-20250120-0007"
T0 = datetime(2025, 1, 15, 2, 0, tzinfo=UTC)


def _t(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


_ENDS = {"referral_id": REFERRAL, "from_institution": TOWNSHIP, "to_institution": COUNTY}
_DOWN_ENDS = {"referral_id": DOWN, "from_institution": COUNTY, "to_institution": TOWNSHIP}

EXAMPLES: dict[type[StrictModel], StrictModel] = {
    m.__class__: m
    for m in (
        v1.ReferralRequested(
            **_ENDS, direction=Direction.up, patient_ref=PATIENT,
            reason=UpwardReason.critical_beyond_capability, urgency=Urgency.emergency,
            requested_by="STAFF-0107", requested_at=_t(8),
            required_capability=Capability.chest_pain_centre,
            attached_results=("study:REC-0001", "lab:OBS-0001"),
        ),
        v1.ReferralDecision(
            referral_id=REFERRAL, decision=Decision.accept, decided_by="STAFF-3001",
            decided_at=_t(12),
        ),
        v1.PatientDeparted(referral_id=REFERRAL, departed_at=_t(20)),
        v1.PatientArrived(referral_id=REFERRAL, arrived_at=_t(65)),
        v1.DischargeSummarySubmitted(
            referral_id=REFERRAL, summary_id="DS-0001", outcome=ClosureOutcome.discharged,
            discharged_at=_t(60 * 24 * 5),
        ),
        v1.FollowUpRecorded(
            referral_id=DOWN, round_day=7, finding=FollowUpFinding.stable,
            seen_at=_t(60 * 24 * 12),
        ),
        v1.ReferralCancelled(
            referral_id=REFERRAL, reason=CancelReason.condition_improved, cancelled_at=_t(10),
        ),
        v1.ReferralSuggested(
            suggestion_id="SUG-0001", patient_ref=PATIENT, from_institution=TOWNSHIP,
            to_institution=COUNTY, capability=Capability.chest_pain_centre, finding="stemi",
            modality="ECG", conclusion_code="I21.0", urgency=Urgency.emergency,
            diagnosis_request_id="DXR-20250115-0001", finding_raised_at=_t(6),
            suggested_at=_t(6.01),
        ),
        v1.ReferralOpened(
            **_ENDS, direction=Direction.up, patient_ref=PATIENT,
            reason=UpwardReason.critical_beyond_capability, urgency=Urgency.emergency,
            required_capability=Capability.chest_pain_centre,
            attached_results=("study:REC-0001", "lab:OBS-0001"), root_referral_id=REFERRAL,
            valid_until=_t(8 + 60 * 24 * 90), admissions_allowed=1, accept_by=_t(38),
            opened_at=_t(8),
        ),
        v1.ReferralAccepted(**_ENDS, accepted_by="STAFF-3001", accepted_at=_t(12),
                            after_departure=False),
        v1.ReferralDeclined(**_ENDS, reason=DeclineReason.no_bed,
                            alternative_institution=PREFECTURE, declined_by="STAFF-3001",
                            declined_at=_t(12)),
        v1.ReferralExpired(**_ENDS, accept_by=_t(38), expired_at=_t(38)),
        v1.ReferralRerouteProposed(**_ENDS, root_referral_id=REFERRAL,
                                   proposed_institution=PREFECTURE, proposed_at=_t(12)),
        v1.ReferralRerouted(
            referral_id=REFERRAL, from_institution=TOWNSHIP, to_institution=PREFECTURE,
            root_referral_id=REFERRAL, child_referral_id="REF-20250115-0002", at_once=True,
            rerouted_at=_t(12)),
        v1.ReferralWithdrawn(**_ENDS, reason=CancelReason.condition_improved,
                             previous_state=CaseState.requested, withdrawn_at=_t(10)),
        v1.PatientInTransit(**_ENDS, departed_at=_t(20), inferred=False,
                            paperwork_pending=False, overdue_at=_t(140)),
        v1.PatientInTransitOverdue(**_ENDS, departed_at=_t(20), overdue_at=_t(140)),
        v1.ReferralPaperworkOverdue(**_ENDS, left_at=_t(20), reminded_at=_t(20 + 6 * 60)),
        v1.PatientReceived(**_ENDS, arrived_at=_t(65), departure_inferred=False,
                           paperwork_pending=False),
        v1.ReferralLost(**_ENDS, reason=LostReason.not_received, lost_at=_t(20 + 24 * 60)),
        v1.ReferralClosed(**_ENDS, direction=Direction.up, outcome=ClosureOutcome.discharged,
                          discharge_summary_id="DS-0001", closed_at=_t(60 * 24 * 5)),
        v1.FollowUpScheduled(**_DOWN_ENDS, handed_over_by="STAFF-3002", round_day=7,
                             due_at=_t(60 * 24 * 12), missed_after=_t(60 * 24 * 15)),
        v1.FollowUpDone(**_DOWN_ENDS, round_day=7, finding=FollowUpFinding.stable,
                        seen_at=_t(60 * 24 * 12), after_missed=False),
        v1.FollowUpMissed(**_DOWN_ENDS, handed_over_by="STAFF-3002", round_day=30,
                          due_at=_t(60 * 24 * 35), missed_at=_t(60 * 24 * 42)),
        v1.CriticalValueForwarded(
            **_ENDS, patient_ref=PATIENT, order_id="ORD-20250115-0001", critical_id="CRIT-0001",
            test_code="10839-9", raised_at=_t(30), forwarded_at=_t(30.01)),
    )
}

# A downward referral's request, for the tests and the terminal documentation.
DOWNWARD_REQUEST = v1.ReferralRequested(
    **_DOWN_ENDS, direction=Direction.down, patient_ref=PATIENT,
    reason=DownwardReason.stable_rehabilitation, urgency=Urgency.routine,
    requested_by="STAFF-3002", requested_at=_t(60 * 24 * 5),
    care_plan=v1.CarePlan(diagnoses=("I21.0",), medications=("XC10AAA",),
                          warning_signs=("chest_pain",)),
    handed_over_by="STAFF-3002",
)

# Who sends each intake example, in the order of v1.INTAKE: a terminal of the
# township that refers, and the county's referral coordinators' terminal.
TOWNSHIP_TERMINAL = "referral-652301-B02"
COUNTY_TERMINAL = "referral-652301-H01"
EXAMPLE_SENDERS: dict[type[StrictModel], tuple[str, str]] = {
    v1.ReferralRequested: (TOWNSHIP_TERMINAL, TOWNSHIP),
    v1.ReferralDecision: (COUNTY_TERMINAL, COUNTY),
    v1.PatientDeparted: (TOWNSHIP_TERMINAL, TOWNSHIP),
    v1.PatientArrived: (COUNTY_TERMINAL, COUNTY),
    v1.DischargeSummarySubmitted: (COUNTY_TERMINAL, COUNTY),
    v1.FollowUpRecorded: (TOWNSHIP_TERMINAL, TOWNSHIP),
    v1.ReferralCancelled: (TOWNSHIP_TERMINAL, TOWNSHIP),
}

# What the referral service answers each intake example with, sent in that order.
EXAMPLE_OUTCOMES: dict[type[StrictModel], dict[str, object]] = {
    v1.ReferralRequested: {"outcome": "accepted", "answer": v1.ReferralOpened.CE_TYPE},
    v1.ReferralDecision: {"outcome": "accepted", "answer": v1.ReferralAccepted.CE_TYPE},
    v1.PatientDeparted: {"outcome": "accepted", "answer": v1.PatientInTransit.CE_TYPE},
    v1.PatientArrived: {"outcome": "accepted", "answer": v1.PatientReceived.CE_TYPE},
    v1.DischargeSummarySubmitted: {"outcome": "accepted",
                                   "answer": v1.ReferralClosed.CE_TYPE},
    v1.FollowUpRecorded: {
        "outcome": "parked", "then_reason": "prerequisite_missing",
        "why": f"{DOWN} was never requested here: the round waits for its referral's "
               "request, and without one within the grace period it is refused."},
    v1.ReferralCancelled: {
        "outcome": "refused", "reason": "case_closed",
        "why": "The referral was closed by the discharge summary before: a referral is "
               "withdrawn only while requested or accepted."},
}

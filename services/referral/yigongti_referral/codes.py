"""Code lists of the referral service (双向转诊). The contract's enums live in
yigongti_contracts.referral.codes and are re-exported here; the codes with a
meaning and a source are listed in policy/codes.yaml, and a test keeps the
two equal. The refusal codes are also published (contracts referral/rejections.py)."""

from __future__ import annotations

from enum import StrEnum

from yigongti_contracts.referral.codes import (
    CancelReason,
    CaseState,
    ChronicClass,
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

__all__ = ["CancelReason", "CaseState", "ChronicClass", "ClosureOutcome", "Decision",
           "DeclineReason", "Direction", "DownwardReason", "FollowUpFinding", "LostReason",
           "UpwardReason", "Urgency", "TERMINAL", "RoundState", "Refusal", "ended"]


TERMINAL = frozenset({CaseState.closed, CaseState.declined, CaseState.expired,
                      CaseState.withdrawn, CaseState.lost})


class RoundState(StrEnum):
    scheduled = "scheduled"
    done = "done"
    missed = "missed"


class Refusal(StrEnum):
    """Why an intake record is refused (the `reason` of IntakeRejected). Only an
    impossible transition is refused; a plausible late record is parked."""

    # who may refer to whom (routing.py)
    unknown_institution = "unknown_institution"
    not_a_clinical_institution = "not_a_clinical_institution"  # a lab, ECG or imaging centre
    same_institution = "same_institution"
    wrong_direction = "wrong_direction"  # up to a lower level, or down to a higher one
    outside_community = "outside_community"  # another county's community
    skips_level = "skips_level"  # past the own total hospital, which could take it
    lacks_capability = "lacks_capability"
    reason_not_for_direction = "reason_not_for_direction"
    care_plan_missing = "care_plan_missing"  # a downward referral carries one
    # the record
    forbidden_institution = "forbidden_institution"  # not the party that may record it
    referral_id_in_use = "referral_id_in_use"  # same id, different request
    validity_ended = "validity_ended"  # arrival after the referral's validity
    departure_after_arrival = "departure_after_arrival"
    not_upward = "not_upward"  # a discharge summary closes upward referrals only
    no_follow_up_plan = "no_follow_up_plan"  # follow-up on an upward referral
    unknown_round = "unknown_round"
    decline_reason_missing = "decline_reason_missing"
    already_accepted = "already_accepted"  # a decline after the acceptance
    already_declined = "already_declined"  # an acceptance after the decline
    already_closed = "already_closed"  # a second, different discharge summary
    patient_departed = "patient_departed"  # decline or cancel once the patient left
    prerequisite_missing = "prerequisite_missing"  # the request never arrived
    # re-route confirmation (a ReferralRequested naming its parent)
    parent_not_found = "parent_not_found"
    parent_not_reroutable = "parent_not_reroutable"  # not a declined or expired upward case
    parent_mismatch = "parent_mismatch"  # another patient or sender than the parent's
    already_rerouted = "already_rerouted"
    already_tried = "already_tried"  # an institution the chain already tried
    # the case ended (the sender was told)
    case_closed = "case_closed"
    case_declined = "case_declined"
    case_expired = "case_expired"
    case_withdrawn = "case_withdrawn"
    case_lost = "case_lost"


def ended(state: CaseState) -> Refusal:
    """The refusal for a record that comes after the case ended in `state`."""
    return Refusal(f"case_{state.value}")

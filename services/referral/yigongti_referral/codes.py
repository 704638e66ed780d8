"""Code lists of the referral service (双向转诊). They become the contract's
enums when the referral contracts are written (issue 12 item 1); the codes with
a meaning and a source are listed in policy/codes.yaml, and a test keeps the
two equal."""

from __future__ import annotations

from enum import StrEnum


class Direction(StrEnum):
    up = "up"  # 上转: village or township → county, county → prefecture
    down = "down"  # 下转: county (or prefecture) → township or village


class Urgency(StrEnum):
    emergency = "emergency"
    urgent = "urgent"
    routine = "routine"


class CaseState(StrEnum):
    """requested → accepted | declined | expired → in transit → received → closed;
    or withdrawn, or lost (DESIGN §5 Referral)."""

    requested = "requested"
    accepted = "accepted"
    in_transit = "in_transit"
    received = "received"
    closed = "closed"
    declined = "declined"
    expired = "expired"
    withdrawn = "withdrawn"
    lost = "lost"


TERMINAL = frozenset({CaseState.closed, CaseState.declined, CaseState.expired,
                      CaseState.withdrawn, CaseState.lost})


class Decision(StrEnum):
    accept = "accept"
    decline = "decline"


class UpwardReason(StrEnum):
    """上转 reasons (domain-rules §7)."""

    critical_beyond_capability = "critical_beyond_capability"
    diagnosis_unclear = "diagnosis_unclear"
    mass_casualty_or_public_health_event = "mass_casualty_or_public_health_event"
    equipment_or_technique_limit = "equipment_or_technique_limit"
    outside_practice_scope = "outside_practice_scope"
    further_tests_needed = "further_tests_needed"
    other = "other"


class DownwardReason(StrEnum):
    """下转 reasons (domain-rules §7)."""

    diagnosis_clear_or_chronic = "diagnosis_clear_or_chronic"
    stable_rehabilitation = "stable_rehabilitation"
    elderly_long_term_care = "elderly_long_term_care"
    terminal_cancer_palliation = "terminal_cancer_palliation"
    common_illness = "common_illness"
    patient_request = "patient_request"


class DeclineReason(StrEnum):
    no_bed = "no_bed"
    capability_unavailable = "capability_unavailable"
    outside_practice_scope = "outside_practice_scope"
    information_incomplete = "information_incomplete"
    other = "other"


class CancelReason(StrEnum):
    condition_improved = "condition_improved"
    patient_declined = "patient_declined"
    patient_deceased = "patient_deceased"
    referred_elsewhere = "referred_elsewhere"
    entered_in_error = "entered_in_error"
    other = "other"


class ClosureOutcome(StrEnum):
    """The outcome the sender learns (the closed loop): for an upward referral the
    discharge disposition (住院病案首页 离院方式), for a downward one care taken over."""

    discharged = "discharged"
    transferred_to_hospital = "transferred_to_hospital"
    transferred_to_primary_care = "transferred_to_primary_care"
    left_against_advice = "left_against_advice"
    died = "died"
    other = "other"
    care_taken_over = "care_taken_over"


class FollowUpFinding(StrEnum):
    stable = "stable"
    improved = "improved"
    worse = "worse"
    warning_sign = "warning_sign"
    referred_up = "referred_up"


class LostReason(StrEnum):
    never_departed = "never_departed"  # accepted, unused when its validity ended
    not_received = "not_received"  # departed, no arrival within the limit
    not_closed = "not_closed"  # received, not closed within the limit


class ChronicClass(StrEnum):
    """Classes whose referral stays valid longer (domain-rules §7)."""

    cancer = "cancer"
    transplant = "transplant"
    uraemia = "uraemia"
    long_term_chronic = "long_term_chronic"


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

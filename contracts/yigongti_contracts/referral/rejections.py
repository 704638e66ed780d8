"""The referral service's own reason codes of `IntakeRejected` (besides the
platform's, `common.PLATFORM_REJECTION_REASONS`), each with what it means to
the sender. The service refuses with nothing else: its `codes.Refusal` lists
the same codes (tests/unit/referral/test_referral_contracts.py). Only an
impossible transition is refused; a plausible late record is parked, and if
what it waits for never comes it is refused `prerequisite_missing`.
"""

from __future__ import annotations

REASONS: dict[str, str] = {
    # who may refer to whom (the reference data)
    "unknown_institution": "from_institution or to_institution is not an institution of the "
                           "medical community.",
    "not_a_clinical_institution": "A lab, ECG or imaging centre neither sends nor receives "
                                  "referrals.",
    "same_institution": "to_institution is the sender itself.",
    "wrong_direction": "Up goes to a higher level, down to a lower one.",
    "outside_community": "The receiver belongs to another county's medical community.",
    "skips_level": "An upward referral passes over the sender's own total hospital, which "
                   "could take the patient.",
    "lacks_capability": "The receiver lacks required_capability (refdata `referral`).",
    "reason_not_for_direction": "The reason is not one of the direction's reasons "
                                "(domain-rules §7).",
    "care_plan_missing": "A downward referral carries a continuing-care plan.",
    # the record
    "forbidden_institution": "The sending terminal's institution is not the end of the "
                             "referral that records this (the sender requests, departs and "
                             "cancels; the receiver decides, records arrival, discharge and "
                             "follow-up).",
    "referral_id_in_use": "Another request already has this referral_id.",
    "validity_ended": "The patient arrived after the referral's validity ended.",
    "departure_after_arrival": "The departure is later than the arrival.",
    "not_upward": "A discharge summary closes upward referrals only.",
    "no_follow_up_plan": "Follow-up rounds belong to downward referrals.",
    "unknown_round": "round_day is not a round of the care plan.",
    "decline_reason_missing": "A decline gives its reason.",
    "already_accepted": "A decline after the acceptance.",
    "already_declined": "An acceptance after the decline.",
    "already_closed": "A second, different discharge summary.",
    "patient_departed": "A decline or cancellation once the patient has left.",
    "prerequisite_missing": "The record waited for its referral's request, which never came "
                            "within the grace period.",
    # re-route confirmation
    "parent_not_found": "parent_referral_id names no referral.",
    "parent_not_reroutable": "The parent is not a declined or expired upward referral.",
    "parent_mismatch": "Another patient, sender or direction than the parent's.",
    "already_rerouted": "The parent was re-routed already.",
    "already_tried": "The chain already tried this institution.",
    # the case ended (the sender was told)
    "case_closed": "The referral is closed.",
    "case_declined": "The referral was declined.",
    "case_expired": "The referral expired.",
    "case_withdrawn": "The referral was withdrawn.",
    "case_lost": "The referral was lost.",
}

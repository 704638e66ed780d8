"""Code lists and value types of the referral contracts (v1).

Enums are closed lists the contract fixes; their meaning and sources are
services/referral/yigongti_referral/policy/codes.yaml (a test keeps the two
equal). Clinical codes (diagnoses, drugs, warning signs) are patterns.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import StringConstraints

from ..lab.codes import Icd10Code  # the same notion as the lab's

__all__ = ["Icd10Code"]

# A drug code of the national medical-insurance drug classification (医保药品
# 分类与代码, e.g. "XN02BEA"): upper-case letters and digits.
DrugCode = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9][A-Z0-9._-]{1,31}$")]
# A warning sign of a care plan, as a code of the service's list ("numbness").
WarningSign = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
# A reference to a recognised result or study attached to a referral:
# "lab:<observation_id>" (lab.events.v1 LabReportVerified) or
# "study:<recognition_id>" (diagnosis.events.v1 StudyRecognised).
AttachedRef = Annotated[
    str, StringConstraints(pattern=r"^(lab|study):[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
# The modality of the finding, as the diagnosis service codes it ("ECG", "CT",
# "MR", "DX"); a pattern here so the referral contract does not follow the
# diagnosis enum's additions.
ModalityCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2,8}$")]
# A coded conclusion of the diagnosis service: ICD-10 where one fits ("I21.0").
ConclusionCode = Annotated[
    str, StringConstraints(pattern=r"^[A-Z][A-Z0-9]{1,7}(\.[A-Z0-9_]{1,16})?$")]
# The trigger of a suggestion (policy/suggestions.yaml `finding`: "stemi").
FindingCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


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

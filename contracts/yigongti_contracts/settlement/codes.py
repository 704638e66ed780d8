"""Codes of the settlement contracts (enums and patterns, never free text)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import StringConstraints

# The counter's idempotency key (national 2207 `outBizNo`): unique per attempt.
OutBizNo = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,40}$")]
# An audit rule's id (policy/supervision.yaml) and a piece of its evidence.
RuleId = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
EvidenceValue = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:+-]{0,64}$")]
# A six-digit administrative region code (GB/T 2260).
# The rule applied at a step of the calculation ("basic.inpatient").
StepRule = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}(\.[a-z][a-z0-9_]{0,31})?$")]
RegionCode = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{5}$")]


def settlement_id_of(institution: str, out_biz_no: str) -> str:
    """The settlement's id: the institution and its counter's outBizNo (both
    unique together), so a retry of one attempt always names the same settlement."""
    return f"{institution}:{out_biz_no}"


class CredentialType(StrEnum):
    """How the person was identified (face must never be the only way)."""

    face = "face"  # a signed result of the national face platform (authNo)
    qr_voucher = "qr_voucher"  # the electronic insurance voucher (医保电子凭证), signed
    card = "card"  # social-security card (HTTPS only)
    id_number = "id_number"  # national ID number (HTTPS only)
    earlier_verification = "earlier_verification"  # the stay's admission check (intake)


class IdentityRejectionReason(StrEnum):
    bad_signature = "bad_signature"  # the result's signature does not verify
    unknown_issuer = "unknown_issuer"  # signed by no registered face-platform issuer
    stale = "stale"  # issued more than 60 s ago (or in the future)
    replayed = "replayed"  # this authNo was used before
    unknown_terminal = "unknown_terminal"  # the terminal is not registered
    revoked_terminal = "revoked_terminal"  # the terminal is revoked
    wrong_institution = "wrong_institution"  # the terminal is another institution's
    face_mismatch = "face_mismatch"  # the platform did not match the face
    low_liveness = "low_liveness"  # the platform's liveness score is under its threshold
    not_enrolled = "not_enrolled"  # no insured person matches (answered as a mismatch)
    deceased = "deceased"  # the person is recorded dead
    token_invalid = "token_invalid"  # no such token, or used, or expired


class SettlementMode(StrEnum):
    counter = "counter"  # pay at the counter
    discharge = "discharge"  # 先诊疗后付费: charges accumulate and settle at discharge


class CareSetting(StrEnum):
    inpatient = "inpatient"
    outpatient = "outpatient"  # 门诊统筹


class ItemCategory(StrEnum):
    a = "a"  # 甲类
    b = "b"  # 乙类
    c = "c"  # 丙类
    out_of_catalogue = "out_of_catalogue"  # 目录外


class Scheme(StrEnum):
    resident = "resident"  # 城乡居民基本医疗保险
    employee = "employee"  # 职工基本医疗保险


class AssistanceCategory(StrEnum):
    none = "none"
    low_income = "low_income"  # 低保
    extreme_poverty = "extreme_poverty"  # 特困
    orphan = "orphan"  # 孤儿
    returned_to_poverty = "returned_to_poverty"  # 返贫致贫
    near_poor = "near_poor"  # 低保边缘
    impoverished_by_illness = "impoverished_by_illness"  # 因病致贫


class AuditGrade(StrEnum):
    suspicious = "suspicious"
    definite = "definite"


class AuditStage(StrEnum):
    before = "before"
    during = "during"
    after = "after"


class AuditDecision(StrEnum):
    upheld = "upheld"
    dismissed = "dismissed"


class DecisionReason(StrEnum):
    """Why an auditor decided as they did (codes; notes stay in the service)."""

    clinically_justified = "clinically_justified"
    billing_error = "billing_error"
    confirmed_irregular = "confirmed_irregular"
    duplicate_flag = "duplicate_flag"
    other = "other"


class ReversalReason(StrEnum):
    counter_timeout = "counter_timeout"  # the answer did not reach the counter (query, then 冲正)
    wrong_bill = "wrong_bill"
    patient_request = "patient_request"
    back_office = "back_office"

"""Settlement v1 contracts: intake on `settlement.intake.v1`, events on
`settlement.events.v1` (DESIGN §4, issue 13).

Frozen: within v1 only additive, optional changes (compat.py). One way to
settle, two doors: the counter settles over HTTPS and waits (national 2207);
this intake carries the same request where no one waits (a discharge under
先诊疗后付费, a back-office reversal). Both share one handler and the
`out_biz_no` idempotency.

Nothing here carries a national ID, a card number, a name, an `authNo` or a
settlement token: ID and card credentials travel only over HTTPS to the
service, and an intake settlement names the identity check made earlier on
the same visit (`identity_id`). Patients travel as `patient_ref`. Events are
keyed by `settlement_id` (`<institution>:<out_biz_no>`); intake by
`out_biz_no` (a request) or `settlement_id` (a reversal).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from ..base import Part, StrictModel
from ..common import Code, FieldError, Identifier, InstitutionId, Money, PatientRef, UtcDateTime
from ..lab.codes import ItemCode
from .codes import (
    AssistanceCategory,
    AuditDecision,
    AuditGrade,
    AuditStage,
    CareSetting,
    CredentialType,
    DecisionReason,
    EvidenceValue,
    IdentityRejectionReason,
    ItemCategory,
    OutBizNo,
    RegionCode,
    ReversalReason,
    RuleId,
    Scheme,
    SettlementMode,
    StepRule,
)

FROZEN = True


class _Settlement(StrictModel):
    KEY_FIELD: ClassVar[str] = "settlement_id"


# --- parts --------------------------------------------------------------------


class BillLine(Part):
    """One item of an itemised bill: amount = quantity × unit price."""

    item_code: ItemCode
    category: ItemCategory
    quantity: int = Field(ge=1, le=999)
    unit_price: Money
    amount: Money
    price_limit: Money | None = Field(default=None, description="最高限价 of the unit price.")
    served_at: UtcDateTime

    @model_validator(mode="after")
    def _amount(self) -> BillLine:
        if self.amount != self.unit_price * self.quantity:
            raise ValueError("amount must be unit_price × quantity")
        return self


class Stay(Part):
    """An inpatient stay's dates (the readmission rule reads them)."""

    admitted_at: UtcDateTime
    discharged_at: UtcDateTime

    @model_validator(mode="after")
    def _order(self) -> Stay:
        if self.discharged_at < self.admitted_at:
            raise ValueError("discharged_at before admitted_at")
        return self


class StepPart(Part):
    """One step of the calculation: the rule applied and what it paid."""

    rule: StepRule
    amount: Money


class Evidence(Part):
    code: Code
    value: EvidenceValue


# --- intake ----------------------------------------------------------------------


class SettlementRequested(StrictModel):
    """Settle a visit where no one waits (a discharge under 先诊疗后付费). The
    person is the one verified earlier on the visit (`identity_id`, the
    settlement_id of that identity check); the bill is the lines given plus,
    with `posted_charges`, the charges the lab and diagnosis services posted
    to the visit and not yet settled."""

    CE_TYPE: ClassVar[str] = "yigongti.settlement.settlement.requested.v1"
    KEY_FIELD: ClassVar[str] = "out_biz_no"

    out_biz_no: OutBizNo
    institution: InstitutionId
    visit_id: Identifier
    identity_id: Identifier
    setting: CareSetting
    mode: SettlementMode
    lines: tuple[BillLine, ...] = Field(default=(), max_length=500)
    posted_charges: bool = False
    stay: Stay | None = None
    operator_id: Identifier
    requested_at: UtcDateTime

    @model_validator(mode="after")
    def _consistent(self) -> SettlementRequested:
        if not self.lines and not self.posted_charges:
            raise ValueError("lines or posted_charges")
        if (self.setting is CareSetting.inpatient) != (self.stay is not None):
            raise ValueError("an inpatient settlement, and only it, carries its stay")
        return self


class SettlementReversalRequested(_Settlement):
    """Reverse (冲正) a completed settlement, e.g. one whose answer timed out."""

    CE_TYPE: ClassVar[str] = "yigongti.settlement.reversal.requested.v1"

    settlement_id: Identifier
    institution: InstitutionId
    reason: ReversalReason
    operator_id: Identifier
    requested_at: UtcDateTime


# --- events --------------------------------------------------------------------------


class IdentityVerified(_Settlement):
    """The person at the counter is identified; a single-use settlement token
    (valid 2 minutes) went back to the counter, never here."""

    CE_TYPE: ClassVar[str] = "yigongti.settlement.identity.verified.v1"

    settlement_id: Identifier
    visit_id: Identifier
    patient_ref: PatientRef
    institution: InstitutionId
    terminal_id: Identifier
    credential_type: CredentialType
    token_expires_at: UtcDateTime
    verified_at: UtcDateTime


class IdentityRejected(_Settlement):
    """An identity check refused, with its reason (no value of the credential)."""

    CE_TYPE: ClassVar[str] = "yigongti.settlement.identity.rejected.v1"

    settlement_id: Identifier
    institution: InstitutionId
    terminal_id: Identifier | None = None
    credential_type: CredentialType
    reason: IdentityRejectionReason
    rejected_at: UtcDateTime


class SettlementCompleted(_Settlement):
    """The three payers' breakdown (三重保障 一站式结算), with the rule applied at
    each step and the policy version; what the patient pays is out_of_pocket."""

    CE_TYPE: ClassVar[str] = "yigongti.settlement.settlement.completed.v1"

    settlement_id: Identifier
    visit_id: Identifier
    patient_ref: PatientRef
    institution: InstitutionId
    setting: CareSetting
    mode: SettlementMode
    scheme: Scheme
    assistance_category: AssistanceCategory
    level: int = Field(ge=1, le=3)
    policy_version: Identifier
    total: Money
    policy_range: Money
    outside_range: Money
    deductible: Money
    basic: Money
    critical_illness: Money
    large_amount_subsidy: Money
    assistance: Money
    out_of_pocket: Money
    steps: tuple[StepPart, ...] = Field(min_length=1, max_length=10)
    supplementary_of: Identifier | None = Field(
        default=None, description="The visit's earlier settlement this one supplements "
                                  "(charges posted after it).")
    settled_at: UtcDateTime

    @model_validator(mode="after")
    def _adds_up(self) -> SettlementCompleted:
        if self.policy_range + self.outside_range != self.total:
            raise ValueError("policy_range + outside_range must be total")
        if (self.basic + self.critical_illness + self.large_amount_subsidy + self.assistance
                + self.out_of_pocket) != self.total:
            raise ValueError("the payers and out_of_pocket must add up to total")
        return self


class SettlementRejected(_Settlement):
    """A settlement refused (reason codes: contracts/terminal, settlement)."""

    CE_TYPE: ClassVar[str] = "yigongti.settlement.settlement.rejected.v1"

    settlement_id: Identifier
    institution: InstitutionId
    visit_id: Identifier
    reason: Code
    fields: tuple[FieldError, ...] = Field(default=(), max_length=50)
    rejected_at: UtcDateTime


class SettlementReversed(_Settlement):
    """A completed settlement taken back (冲正); the accumulators are restored."""

    CE_TYPE: ClassVar[str] = "yigongti.settlement.settlement.reversed.v1"

    settlement_id: Identifier
    visit_id: Identifier
    patient_ref: PatientRef
    institution: InstitutionId
    reason: ReversalReason
    total: Money
    basic: Money
    critical_illness: Money
    large_amount_subsidy: Money
    assistance: Money
    out_of_pocket: Money
    reversed_at: UtcDateTime


class SafetyNetAssistanceGranted(_Settlement):
    """托底救助 granted by the insurance office on a completed settlement, after
    the patient's application and review; lowers what the patient bears."""

    CE_TYPE: ClassVar[str] = "yigongti.settlement.safety_net.granted.v1"

    settlement_id: Identifier
    patient_ref: PatientRef
    amount: Money
    out_of_pocket_before: Money
    out_of_pocket_after: Money
    granted_by: Identifier
    granted_at: UtcDateTime


class AuditFlagRaised(_Settlement):
    """A fund-supervision rule (智能审核) hit, with its evidence as codes."""

    CE_TYPE: ClassVar[str] = "yigongti.settlement.audit_flag.raised.v1"

    flag_id: Identifier
    settlement_id: Identifier
    patient_ref: PatientRef
    institution: InstitutionId
    rule_id: RuleId
    grade: AuditGrade
    stage: AuditStage
    evidence: tuple[Evidence, ...] = Field(default=(), max_length=20)
    to_review: bool
    raised_at: UtcDateTime


class AuditDecisionRecorded(_Settlement):
    """An auditor's decision on a flag (upheld or dismissed, by whom, why)."""

    CE_TYPE: ClassVar[str] = "yigongti.settlement.audit_decision.recorded.v1"

    flag_id: Identifier
    settlement_id: Identifier
    rule_id: RuleId
    decision: AuditDecision
    reason: DecisionReason
    decided_by: Identifier
    decided_at: UtcDateTime


class HighOutOfPocketAlert(_Settlement):
    """A person's out-of-pocket for the year passed the return-to-poverty warning
    threshold (domain-rules §3), with the settlement that crossed it."""

    CE_TYPE: ClassVar[str] = "yigongti.settlement.high_out_of_pocket.alert.v1"

    settlement_id: Identifier
    patient_ref: PatientRef
    region: RegionCode
    policy_version: Identifier
    formerly_poor: bool
    threshold: Money
    out_of_pocket: Money
    raised_at: UtcDateTime


INTAKE: tuple[type[StrictModel], ...] = (SettlementRequested, SettlementReversalRequested)
EVENTS: tuple[type[StrictModel], ...] = (
    IdentityVerified,
    IdentityRejected,
    SettlementCompleted,
    SettlementRejected,
    SettlementReversed,
    SafetyNetAssistanceGranted,
    AuditFlagRaised,
    AuditDecisionRecorded,
    HighOutOfPocketAlert,
)
CONTRACTS = INTAKE + EVENTS

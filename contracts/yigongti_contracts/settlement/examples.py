"""One example of each settlement contract: the seeds' low-income inpatient
at the county hospital, settled at discharge (DESIGN §3 step 6).

The events are published as AsyncAPI message examples (examples.EXAMPLES).
The intake examples are `INTAKE_EXAMPLES`: they need an identity check made
earlier on the visit (identity_id), which only the HTTP door makes, so the
integration test sends them after one (tests/integration/settlement).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ..base import StrictModel
from . import v1
from .codes import (
    AssistanceCategory,
    AuditDecision,
    AuditGrade,
    AuditStage,
    CareSetting,
    CredentialType,
    DecisionReason,
    IdentityRejectionReason,
    ItemCategory,
    ReversalReason,
    Scheme,
    SettlementMode,
    settlement_id_of,
)

HOSPITAL = "652325-B01"  # 奇台县总医院乔仁乡分院 (the dev terminal's institution)
PATIENT = "v1:" + "5d41402abc4b2a76b9719d911017c592" * 2
T0 = datetime(2025, 3, 20, 4, 0, tzinfo=UTC)
ADMISSION = settlement_id_of(HOSPITAL, "ADM-20250310-0001")
SETTLEMENT = settlement_id_of(HOSPITAL, "DIS-20250320-0001")
Y = Decimal


def _t(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


_LINE = v1.BillLine(item_code="310100001", category=ItemCategory.a, quantity=2,
                    unit_price=Y("150.00"), amount=Y("300.00"), served_at=_t(-2880))

INTAKE_EXAMPLES: dict[type[StrictModel], StrictModel] = {
    m.__class__: m for m in (
        v1.SettlementRequested(
            out_biz_no="DIS-20250320-0001", institution=HOSPITAL, visit_id="VIS-0001",
            identity_id=ADMISSION, setting=CareSetting.inpatient, mode=SettlementMode.discharge,
            lines=(_LINE,), posted_charges=True,
            stay=v1.Stay(admitted_at=_t(-14400), discharged_at=_t(-60)),
            operator_id="STAFF-0501", requested_at=_t(0)),
        v1.SettlementReversalRequested(
            settlement_id=SETTLEMENT, institution=HOSPITAL, reason=ReversalReason.back_office,
            operator_id="STAFF-0502", requested_at=_t(30)),
    )
}

EVENT_EXAMPLES: dict[type[StrictModel], StrictModel] = {
    m.__class__: m for m in (
        v1.IdentityVerified(
            settlement_id=ADMISSION, visit_id="VIS-0001", patient_ref=PATIENT,
            institution=HOSPITAL, terminal_id="demo-terminal-1",
            credential_type=CredentialType.face, token_expires_at=_t(-14398),
            verified_at=_t(-14400)),
        v1.IdentityRejected(
            settlement_id=settlement_id_of(HOSPITAL, "ADM-20250310-0000"), institution=HOSPITAL,
            terminal_id="demo-terminal-1", credential_type=CredentialType.face,
            reason=IdentityRejectionReason.low_liveness, rejected_at=_t(-14401)),
        v1.SettlementCompleted(
            settlement_id=SETTLEMENT, visit_id="VIS-0001", patient_ref=PATIENT,
            institution=HOSPITAL, setting=CareSetting.inpatient, mode=SettlementMode.discharge,
            scheme=Scheme.resident, assistance_category=AssistanceCategory.low_income, level=2,
            policy_version="652300-2025.1", total=Y("114300.00"), policy_range=Y("108000.00"),
            outside_range=Y("6300.00"), deductible=Y("450.00"), basic=Y("80000.00"),
            critical_illness=Y("17000.00"), large_amount_subsidy=Y("0.00"),
            assistance=Y("10600.00"), out_of_pocket=Y("6700.00"),
            steps=(v1.StepPart(rule="items", amount=Y("108000.00")),
                   v1.StepPart(rule="basic.inpatient", amount=Y("80000.00")),
                   v1.StepPart(rule="critical_illness", amount=Y("17000.00")),
                   v1.StepPart(rule="assistance", amount=Y("10600.00")),
                   v1.StepPart(rule="out_of_pocket", amount=Y("6700.00"))),
            settled_at=_t(0)),
        v1.SettlementRejected(
            settlement_id=settlement_id_of(HOSPITAL, "DIS-20250320-0000"), institution=HOSPITAL,
            visit_id="VIS-0001", reason="nothing_to_settle", rejected_at=_t(-1)),
        v1.SettlementReversed(
            settlement_id=SETTLEMENT, visit_id="VIS-0001", patient_ref=PATIENT,
            institution=HOSPITAL, reason=ReversalReason.back_office, total=Y("114300.00"),
            basic=Y("80000.00"), critical_illness=Y("17000.00"),
            large_amount_subsidy=Y("0.00"), assistance=Y("10600.00"),
            out_of_pocket=Y("6700.00"), reversed_at=_t(30)),
        v1.SafetyNetAssistanceGranted(
            settlement_id=SETTLEMENT, patient_ref=PATIENT, amount=Y("2447.00"),
            out_of_pocket_before=Y("6700.00"), out_of_pocket_after=Y("4253.00"),
            granted_by="STAFF-0900", granted_at=_t(43200)),
        v1.AuditFlagRaised(
            flag_id="FLAG-0001", settlement_id=SETTLEMENT, patient_ref=PATIENT,
            institution=HOSPITAL, rule_id="readmission_15_days", grade=AuditGrade.suspicious,
            stage=AuditStage.during,
            evidence=(v1.Evidence(code="previous_discharged_on", value="2025-03-01"),
                      v1.Evidence(code="days_between", value="9")),
            to_review=True, raised_at=_t(0)),
        v1.AuditDecisionRecorded(
            flag_id="FLAG-0001", settlement_id=SETTLEMENT, rule_id="readmission_15_days",
            decision=AuditDecision.dismissed, reason=DecisionReason.clinically_justified,
            decided_by="STAFF-0901", decided_at=_t(2880)),
        v1.HighOutOfPocketAlert(
            settlement_id=SETTLEMENT, patient_ref=PATIENT, region="652325",
            policy_version="652300-2025.1", formerly_poor=True, threshold=Y("9000.00"),
            out_of_pocket=Y("9100.00"), raised_at=_t(0)),
    )
}

EXAMPLES = {**INTAKE_EXAMPLES, **EVENT_EXAMPLES}

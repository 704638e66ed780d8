"""One example of each diagnosis contract (AsyncAPI documents and tests):
the reference scenario's STEMI ECG from a township branch, read at the county
ECG centre (DESIGN §3 steps 2–3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ..base import StrictModel
from ..common import Age, AgeUnit, Sex
from ..lab.codes import PolicyCategory
from . import v1
from .codes import AckChannel, CancellationReason, Modality, Priority, ReleaseReason

CLINIC = "652325-B01"  # 奇台县总医院乔仁乡分院 (a township branch)
ECG_CENTRE = "652325-E01"
PATIENT = "v1:" + "5d41402abc4b2a76b9719d911017c592" * 2
REQUEST = "DXR-20250115-0001"
T0 = datetime(2025, 1, 15, 2, 0, tzinfo=UTC)


def _t(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


EXAMPLES: dict[type[StrictModel], StrictModel] = {
    m.__class__: m
    for m in (
        v1.DiagnosisRequested(
            request_id=REQUEST, visit_id="VIS-0001", patient_ref=PATIENT, sex=Sex.male,
            age=Age(value=80, unit=AgeUnit.years), modality=Modality.ECG,
            recording_ref="REC-7f3a9c", indications=("R07.4",), symptom_onset=_t(-40),
            first_medical_contact_at=_t(-8), requesting_institution=CLINIC,
            requesting_clinician="STAFF-0107", requested_at=_t(0),
        ),
        v1.CriticalFindingAck(
            request_id=REQUEST, finding_id="CF-0001", acknowledged_by="STAFF-0107",
            channel=AckChannel.terminal, read_back_confirmed=True, acknowledged_at=_t(9),
        ),
        v1.DiagnosisCancelled(
            request_id=REQUEST, reason=CancellationReason.entered_in_error,
            cancelled_by="STAFF-0107", cancelled_at=_t(1),
        ),
        v1.DiagnosisQueued(
            request_id=REQUEST, modality=Modality.ECG, priority=Priority.stat,
            priority_reasons=("chest_pain_under_12h",), due_at=_t(10),
            reading_centre=ECG_CENTRE, requesting_institution=CLINIC, patient_ref=PATIENT,
            sex=Sex.male, age=Age(value=80, unit=AgeUnit.years), indications=("R07.4",),
            symptom_onset=_t(-40), queued_at=_t(0.1),
        ),
        v1.DiagnosisClaimed(
            request_id=REQUEST, reading_centre=ECG_CENTRE, reader="STAFF-2001",
            lease_until=_t(16), claimed_at=_t(1),
        ),
        v1.DiagnosisReleased(
            request_id=REQUEST, reading_centre=ECG_CENTRE, reader="STAFF-2001",
            reason=ReleaseReason.lease_expired, released_at=_t(16),
        ),
        v1.DiagnosisWithdrawn(
            request_id=REQUEST, requesting_institution=CLINIC,
            reason=CancellationReason.entered_in_error, withdrawn_at=_t(1.1),
        ),
        v1.DiagnosisReported(
            request_id=REQUEST, report_id="RPT-D-0001", modality=Modality.ECG,
            reading_centre=ECG_CENTRE, requesting_institution=CLINIC, patient_ref=PATIENT,
            conclusions=("I21.0",), critical=True, reader="STAFF-2001", signed_at=_t(6),
        ),
        v1.ReportAmended(
            request_id=REQUEST, report_id="RPT-D-0001", revision=2,
            requesting_institution=CLINIC, patient_ref=PATIENT, conclusions=("I21.0", "I44.2"),
            critical=True, reason=v1.AmendmentReason.finding_added, amended_by="STAFF-2001",
            amended_at=_t(30),
        ),
        v1.DiagnosisOverdue(
            request_id=REQUEST, reading_centre=ECG_CENTRE, priority=Priority.stat,
            due_at=_t(10), supervisor="STAFF-2000", overdue_at=_t(10),
        ),
        v1.CriticalFindingRaised(
            finding_id="CF-0001", request_id=REQUEST, report_id="RPT-D-0001",
            patient_ref=PATIENT, sex=Sex.male, age=Age(value=80, unit=AgeUnit.years),
            requesting_institution=CLINIC, reading_centre=ECG_CENTRE, modality=Modality.ECG,
            conclusion="I21.0", raised_at=_t(6), acknowledge_by=_t(16),
        ),
        v1.CriticalFindingAcknowledged(
            finding_id="CF-0001", request_id=REQUEST, requesting_institution=CLINIC,
            acknowledged_by="STAFF-0107", channel=AckChannel.terminal, acknowledged_at=_t(9),
        ),
        v1.CriticalFindingEscalated(
            finding_id="CF-0001", request_id=REQUEST, step=1, escalated_to="STAFF-0110",
            escalated_at=_t(16), next_escalation_at=_t(21),
        ),
        v1.StudyRecognised(
            recognition_id="REC-0001", request_id=REQUEST, modality=Modality.ECG,
            patient_ref=PATIENT, performed_by=CLINIC, recording_ref="REC-7f3a9c",
            reported_at=_t(6), valid_until=_t(6 + 60 * 24 * 30),
        ),
        v1.ChargesPosted(
            request_id=REQUEST, charge_id="CHG-D-0001", visit_id="VIS-0001",
            patient_ref=PATIENT, billing_institution=CLINIC, item_code="310701001",
            policy_category=PolicyCategory.a, quantity=1, unit_price=Decimal("25.00"),
            amount=Decimal("25.00"), price_table_id="XJ-2024-DIAG", posted_at=_t(6),
        ),
        v1.ChargesReversed(
            request_id=REQUEST, charge_id="CHG-D-0001", visit_id="VIS-0001",
            patient_ref=PATIENT, billing_institution=CLINIC, item_code="310701001",
            amount=Decimal("25.00"), reversed_at=_t(40),
        ),
    )
}

# Who sends each intake example (the dev clinic terminal, registered for CLINIC)
# and what the service answers, sent in the order of v1.INTAKE.
EXAMPLE_TERMINAL = "demo-terminal-1"
EXAMPLE_SENDERS: dict[type[StrictModel], tuple[str, str]] = {
    m: (EXAMPLE_TERMINAL, CLINIC) for m in v1.INTAKE
}
EXAMPLE_OUTCOMES: dict[type[StrictModel], dict[str, object]] = {
    v1.DiagnosisRequested: {
        "outcome": "refused", "reason": "unknown_recording",
        "why": "REC-7f3a9c was never uploaded: a real request carries the recording_ref "
               "that POST /recordings answered to the same institution, once."},
    v1.CriticalFindingAck: {
        "outcome": "refused", "reason": "unknown_request",
        "why": "The example's request was refused, so it has no critical finding: a real "
               "acknowledgement carries the finding_id of a CriticalFindingRaised."},
    v1.DiagnosisCancelled: {
        "outcome": "refused", "reason": "unknown_request",
        "why": "The example's request was refused; a real cancellation names a request "
               "that was queued and not yet signed (then the answer is DiagnosisWithdrawn)."},
}

"""Diagnosis v1 contracts: intake on `diagnosis.intake.v1`, events on
`diagnosis.events.v1` (DESIGN §4), keyed by `request_id`.

Events carry sex and age, codes and ids, never free text: findings and
impressions stay in the service's database; a report travels as its coded
conclusion. No event carries a waveform or an image: an ECG is uploaded over
HTTP and referred to by its `recording_ref` (claim check), an imaging study by
its DICOM Study Instance UID on the county PACS.

Frozen (issue 10): within v1 only new optional fields (contracts/schemas, compat.py).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from ..base import StrictModel
from ..common import Age, Identifier, InstitutionId, Money, PatientRef, Sex, UtcDateTime
from ..lab.codes import ItemCode, PolicyCategory
from .codes import (
    AccessionNumber,
    AckChannel,
    AmendmentReason,
    CancellationReason,
    ConclusionCode,
    Icd10Code,
    Modality,
    Priority,
    PriorityReason,
    ReleaseReason,
    StudyInstanceUid,
)

FROZEN = True


class _Request(StrictModel):
    KEY_FIELD: ClassVar[str] = "request_id"


def _unique(items: tuple, what: str) -> None:
    if len(set(items)) != len(items):
        raise ValueError(f"{what} must be unique")


# --- intake from clinics ---------------------------------------------------------


class DiagnosisRequested(_Request):
    """A clinic asks the county to read an ECG or an imaging study (→ ServiceRequest)."""

    CE_TYPE: ClassVar[str] = "yigongti.diagnosis.requested.v1"

    request_id: Identifier
    visit_id: Identifier
    patient_ref: PatientRef
    sex: Sex
    age: Age
    modality: Modality
    recording_ref: Identifier | None = Field(
        default=None, description="ECG: the reference the service returned for the uploaded "
        "recording (POST /recordings); used once, by the institution that uploaded it.")
    study_instance_uid: StudyInstanceUid | None = Field(
        default=None, description="Imaging: the study on the county PACS.")
    accession_number: AccessionNumber | None = Field(
        default=None, description="Imaging: must match the study's on the PACS.")
    indications: tuple[Icd10Code, ...] = Field(min_length=1, max_length=10)
    symptom_onset: UtcDateTime | None = Field(
        default=None, description="When the symptoms began (chest pain < 12 h makes it STAT).")
    first_medical_contact_at: UtcDateTime | None = Field(
        default=None, description="Chest-pain centre measure: first medical contact → first ECG.")
    clinician_priority: Priority | None = Field(
        default=None, description="The clinician's own priority; the service never lowers it.")
    requesting_institution: InstitutionId
    requesting_clinician: Identifier
    requested_at: UtcDateTime

    @model_validator(mode="after")
    def _claim_check(self) -> DiagnosisRequested:
        _unique(self.indications, "indications")
        if self.modality is Modality.ECG:
            if self.recording_ref is None or self.study_instance_uid or self.accession_number:
                raise ValueError("an ECG request names its recording_ref and no study")
        elif self.study_instance_uid is None or self.accession_number is None \
                or self.recording_ref is not None:
            raise ValueError("an imaging request names its study_instance_uid and "
                             "accession_number, and no recording")
        return self


class CriticalFindingAck(_Request):
    """The requesting clinic takes a critical finding, reading it back."""

    CE_TYPE: ClassVar[str] = "yigongti.diagnosis.critical_finding.ack.v1"

    request_id: Identifier
    finding_id: Identifier
    acknowledged_by: Identifier
    channel: AckChannel
    read_back_confirmed: bool = Field(
        description="Only an acknowledgement with the read-back confirmed stops the clock.")
    acknowledged_at: UtcDateTime


class DiagnosisCancelled(_Request):
    """The clinic withdraws a request (allowed until the report is signed)."""

    CE_TYPE: ClassVar[str] = "yigongti.diagnosis.cancelled.v1"

    request_id: Identifier
    reason: CancellationReason
    cancelled_by: Identifier
    cancelled_at: UtcDateTime


# --- events ------------------------------------------------------------------------


class DiagnosisQueued(_Request):
    """On the reading centre's worklist, triaged (→ Task)."""

    CE_TYPE: ClassVar[str] = "yigongti.diagnosis.queued.v1"

    request_id: Identifier
    modality: Modality
    priority: Priority
    priority_reasons: tuple[PriorityReason, ...] = ()
    due_at: UtcDateTime
    reading_centre: InstitutionId
    requesting_institution: InstitutionId
    patient_ref: PatientRef
    sex: Sex
    age: Age
    indications: tuple[Icd10Code, ...]
    symptom_onset: UtcDateTime | None = None
    queued_at: UtcDateTime


class DiagnosisClaimed(_Request):
    CE_TYPE: ClassVar[str] = "yigongti.diagnosis.claimed.v1"

    request_id: Identifier
    reading_centre: InstitutionId
    reader: Identifier
    lease_until: UtcDateTime
    claimed_at: UtcDateTime


class DiagnosisReleased(_Request):
    CE_TYPE: ClassVar[str] = "yigongti.diagnosis.released.v1"

    request_id: Identifier
    reading_centre: InstitutionId
    reader: Identifier
    reason: ReleaseReason
    released_at: UtcDateTime


class DiagnosisWithdrawn(_Request):
    """The answer to a cancellation: the request leaves the worklist unread."""

    CE_TYPE: ClassVar[str] = "yigongti.diagnosis.withdrawn.v1"

    request_id: Identifier
    requesting_institution: InstitutionId
    reason: CancellationReason
    withdrawn_at: UtcDateTime


class DiagnosisReported(_Request):
    """A signed report (→ DiagnosticReport): its coded conclusions; the text stays
    in the service."""

    CE_TYPE: ClassVar[str] = "yigongti.diagnosis.reported.v1"

    request_id: Identifier
    report_id: Identifier
    modality: Modality
    reading_centre: InstitutionId
    requesting_institution: InstitutionId
    patient_ref: PatientRef
    conclusions: tuple[ConclusionCode, ...] = Field(min_length=1, max_length=10)
    critical: bool
    reader: Identifier
    signed_at: UtcDateTime

    @model_validator(mode="after")
    def _distinct(self) -> DiagnosisReported:
        _unique(self.conclusions, "conclusions")
        return self


class ReportAmended(_Request):
    """A signed report changed: a new revision; the original is kept."""

    CE_TYPE: ClassVar[str] = "yigongti.diagnosis.report.amended.v1"

    request_id: Identifier
    report_id: Identifier
    revision: int = Field(ge=2, le=99)
    requesting_institution: InstitutionId
    patient_ref: PatientRef
    conclusions: tuple[ConclusionCode, ...] = Field(min_length=1, max_length=10)
    critical: bool
    reason: AmendmentReason
    amended_by: Identifier
    amended_at: UtcDateTime


class DiagnosisOverdue(_Request):
    """Still unread at its due time: the centre's supervisor is told."""

    CE_TYPE: ClassVar[str] = "yigongti.diagnosis.overdue.v1"

    request_id: Identifier
    reading_centre: InstitutionId
    priority: Priority
    due_at: UtcDateTime
    supervisor: Identifier
    overdue_at: UtcDateTime


class CriticalFindingRaised(_Request):
    """A report signed with a critical finding: the requesting clinic must
    acknowledge with read-back before `acknowledge_by` (→ Communication)."""

    CE_TYPE: ClassVar[str] = "yigongti.diagnosis.critical_finding.raised.v1"

    finding_id: Identifier
    request_id: Identifier
    report_id: Identifier
    patient_ref: PatientRef
    sex: Sex
    age: Age
    requesting_institution: InstitutionId
    reading_centre: InstitutionId
    modality: Modality
    conclusion: ConclusionCode
    raised_at: UtcDateTime
    acknowledge_by: UtcDateTime


class CriticalFindingAcknowledged(_Request):
    CE_TYPE: ClassVar[str] = "yigongti.diagnosis.critical_finding.acknowledged.v1"

    finding_id: Identifier
    request_id: Identifier
    requesting_institution: InstitutionId
    acknowledged_by: Identifier
    channel: AckChannel
    acknowledged_at: UtcDateTime


class CriticalFindingEscalated(_Request):
    """Not acknowledged in time: the next step of the ladder is called."""

    CE_TYPE: ClassVar[str] = "yigongti.diagnosis.critical_finding.escalated.v1"

    finding_id: Identifier
    request_id: Identifier
    step: int = Field(ge=1, le=99)
    escalated_to: Identifier = Field(description="The person or role called at this step.")
    escalated_at: UtcDateTime
    next_escalation_at: UtcDateTime


class StudyRecognised(_Request):
    """The examination itself (images and measurements, never the reader's
    conclusion: the 2022 national measures) is recognised (互认) until
    `valid_until`; a referral attaches it so the receiver does not repeat it."""

    CE_TYPE: ClassVar[str] = "yigongti.diagnosis.study.recognised.v1"

    recognition_id: Identifier
    request_id: Identifier
    modality: Modality
    patient_ref: PatientRef
    performed_by: InstitutionId = Field(description="The requesting institution.")
    study_instance_uid: StudyInstanceUid | None = None
    recording_ref: Identifier | None = None
    reported_at: UtcDateTime
    valid_until: UtcDateTime
    supersedes: Identifier | None = Field(
        default=None, description="The recognition_id this one replaces, if any.")


class ChargesPosted(_Request):
    """The reading fee of a signed report, on the visit (→ ChargeItem); the
    same fields as the lab's, keyed by the request."""

    CE_TYPE: ClassVar[str] = "yigongti.diagnosis.charges.posted.v1"

    request_id: Identifier
    charge_id: Identifier
    visit_id: Identifier
    patient_ref: PatientRef
    billing_institution: InstitutionId
    item_code: ItemCode
    policy_category: PolicyCategory
    quantity: int = Field(ge=1, le=99)
    unit_price: Money
    amount: Money
    price_table_id: Identifier
    posted_at: UtcDateTime

    @model_validator(mode="after")
    def _amount(self) -> ChargesPosted:
        if self.amount != self.unit_price * self.quantity:
            raise ValueError("amount must be unit_price × quantity")
        return self


class ChargesReversed(_Request):
    """A posted reading fee taken back (a report withdrawn by amendment)."""

    CE_TYPE: ClassVar[str] = "yigongti.diagnosis.charges.reversed.v1"

    request_id: Identifier
    charge_id: Identifier
    visit_id: Identifier
    patient_ref: PatientRef
    billing_institution: InstitutionId
    item_code: ItemCode
    amount: Money
    reversed_at: UtcDateTime


INTAKE: tuple[type[StrictModel], ...] = (DiagnosisRequested, CriticalFindingAck,
                                         DiagnosisCancelled)
EVENTS: tuple[type[StrictModel], ...] = (
    DiagnosisQueued, DiagnosisClaimed, DiagnosisReleased, DiagnosisWithdrawn, DiagnosisReported,
    ReportAmended, DiagnosisOverdue, CriticalFindingRaised, CriticalFindingAcknowledged,
    CriticalFindingEscalated, StudyRecognised, ChargesPosted, ChargesReversed,
)
CONTRACTS = INTAKE + EVENTS

"""Lab v1 contracts: intake on `lab.intake.v1`, events on `lab.events.v1` (DESIGN §4).

Frozen: within v1 only additive, optional changes (see compat.py). No names,
national IDs or free text: patients travel as `patient_ref`, staff and devices
as ids, everything else as codes. Keyed by `order_id`, except intake that knows
only a barcode (`AnalyserResults`) or a shipment (`SpecimenDispatched`).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from ..base import StrictModel
from ..common import (
    Age,
    Identifier,
    InstitutionId,
    Money,
    PatientRef,
    Quantity,
    Sex,
    UtcDateTime,
)
from .codes import (
    AckChannel,
    AmendmentReason,
    Barcode,
    CallBackOutcome,
    CancellationReason,
    CodedValue,
    Comparator,
    CriticalDirection,
    Icd10Code,
    ItemCode,
    PolicyCategory,
    Priority,
    ProcessingState,
    RejectionReason,
    ReversalReason,
    TestCode,
    TubeType,
    Unit,
)
from .parts import (
    AnalyserObservation,
    Inspection,
    LoggerReadout,
    Observation,
    OrderedTest,
    RecognisedResult,
    Recognition,
)

FROZEN = True


def _unique(items: tuple, what: str) -> None:
    if len(set(items)) != len(items):
        raise ValueError(f"{what} must be unique")


class _LabRecord(StrictModel):
    KEY_FIELD: ClassVar[str] = "order_id"


# --- intake from clinics ---------------------------------------------------


class LabOrderPlaced(_LabRecord):
    """A clinic orders tests for a patient (→ ServiceRequest)."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.order.placed.v1"

    order_id: Identifier
    visit_id: Identifier
    patient_ref: PatientRef
    sex: Sex
    age: Age
    ordering_institution: InstitutionId
    ordering_clinician: Identifier
    priority: Priority
    tests: tuple[OrderedTest, ...] = Field(min_length=1, max_length=50)
    indications: tuple[Icd10Code, ...] = Field(default=(), max_length=10)
    ordered_at: UtcDateTime

    @model_validator(mode="after")
    def _distinct_tests(self) -> LabOrderPlaced:
        _unique(tuple(t.code for t in self.tests), "test codes")
        return self


class SpecimenCollected(_LabRecord):
    """A tube was drawn for an order; it carries the listed tests (→ Specimen)."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.specimen.collected.v1"

    barcode: Barcode
    order_id: Identifier
    tests: tuple[TestCode, ...] = Field(min_length=1, max_length=50)
    tube: TubeType
    collected_at: UtcDateTime
    centrifuged_at: UtcDateTime | None = None
    collector_id: Identifier
    recollection_of: Barcode | None = Field(
        default=None, description="The rejected tube this one replaces."
    )

    @model_validator(mode="after")
    def _consistent(self) -> SpecimenCollected:
        _unique(self.tests, "tests")
        if self.centrifuged_at is not None and self.centrifuged_at < self.collected_at:
            raise ValueError("centrifuged_at before collected_at")
        if self.recollection_of == self.barcode:
            raise ValueError("a recollection has a new barcode")
        return self


class SpecimenDispatched(StrictModel):
    """Tubes leave the clinic in a transport box with a temperature logger."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.specimen.dispatched.v1"
    KEY_FIELD: ClassVar[str] = "shipment_id"

    shipment_id: Identifier
    barcodes: tuple[Barcode, ...] = Field(min_length=1, max_length=200)
    courier_id: Identifier
    temperature_logger_id: Identifier
    dispatched_at: UtcDateTime
    destination: InstitutionId | None = Field(default=None, description="The lab centre.")

    @model_validator(mode="after")
    def _distinct(self) -> SpecimenDispatched:
        _unique(self.barcodes, "barcodes")
        return self


class LabOrderCancelled(_LabRecord):
    """The clinic cancels the whole order (`tests` absent) or the listed tests."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.order.cancelled.v1"

    order_id: Identifier
    tests: tuple[TestCode, ...] | None = Field(default=None, min_length=1, max_length=50)
    reason: CancellationReason
    cancelled_by: Identifier
    cancelled_at: UtcDateTime

    @model_validator(mode="after")
    def _distinct(self) -> LabOrderCancelled:
        if self.tests is not None:
            _unique(self.tests, "tests")
        return self


class CriticalValueAck(_LabRecord):
    """The ordering clinic acknowledges a critical value, with read-back or not."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.critical_value.ack.v1"

    order_id: Identifier
    critical_id: Identifier
    received_by: Identifier
    read_back_confirmed: bool
    acknowledged_at: UtcDateTime


# --- intake from analysers -------------------------------------------------


class AnalyserResults(StrictModel):
    """Results of one run for one tube, known by barcode (HL7 ORU^R01 maps to it)."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.analyser_results.sent.v1"
    KEY_FIELD: ClassVar[str] = "barcode"

    barcode: Barcode
    analyser_id: Identifier
    run_at: UtcDateTime
    observations: tuple[AnalyserObservation, ...] = Field(min_length=1, max_length=100)
    message_id: Identifier | None = Field(default=None, description="HL7 MSH-10, if any.")


# --- events ----------------------------------------------------------------


class LabOrderAccepted(_LabRecord):
    """The order is valid; `tests` will be performed, `avoided_tests` are reused."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.order.accepted.v1"

    order_id: Identifier
    visit_id: Identifier
    patient_ref: PatientRef
    ordering_institution: InstitutionId
    lab_centre: InstitutionId
    priority: Priority
    tests: tuple[TestCode, ...] = Field(max_length=50)
    avoided_tests: tuple[TestCode, ...] = Field(default=(), max_length=50)
    accepted_at: UtcDateTime

    @model_validator(mode="after")
    def _partition(self) -> LabOrderAccepted:
        both = self.tests + self.avoided_tests
        if not both:
            raise ValueError("an accepted order has tests")
        _unique(both, "tests and avoided_tests")
        return self


class DuplicateTestAvoided(_LabRecord):
    """A test not repeated: a recognised result (互认结果) answers it."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.test.duplicate_avoided.v1"

    order_id: Identifier
    test_code: TestCode
    patient_ref: PatientRef
    ordering_institution: InstitutionId
    recognised: RecognisedResult
    avoided_at: UtcDateTime


class SpecimenCollectionRecorded(_LabRecord):
    CE_TYPE: ClassVar[str] = "yigongti.lab.specimen.collection_recorded.v1"

    order_id: Identifier
    barcode: Barcode
    tests: tuple[TestCode, ...] = Field(min_length=1, max_length=50)
    tube: TubeType
    processing_state: ProcessingState
    collected_at: UtcDateTime
    centrifuged_at: UtcDateTime | None = None
    collector_id: Identifier
    recollection_of: Barcode | None = None
    patient_ref: PatientRef | None = Field(
        default=None, description="The order's patient (added in 1.2: the FHIR Specimen needs "
                                  "its subject).")


class SpecimenInTransit(_LabRecord):
    CE_TYPE: ClassVar[str] = "yigongti.lab.specimen.in_transit.v1"

    order_id: Identifier
    barcode: Barcode
    shipment_id: Identifier
    courier_id: Identifier
    temperature_logger_id: Identifier
    dispatched_at: UtcDateTime


class SpecimenInTransitOverdue(_LabRecord):
    """A tube still in transit has passed its stability limit before arrival."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.specimen.in_transit_overdue.v1"

    order_id: Identifier
    barcode: Barcode
    shipment_id: Identifier | None = None
    limiting_test: TestCode
    processing_state: ProcessingState
    collected_at: UtcDateTime
    stable_until: UtcDateTime
    detected_at: UtcDateTime


class SpecimenReceived(_LabRecord):
    """The tube arrived at the lab centre and passed inspection."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.specimen.received.v1"

    order_id: Identifier
    barcode: Barcode
    lab_centre: InstitutionId
    received_by: Identifier
    received_at: UtcDateTime
    processing_state: ProcessingState
    inspection: Inspection
    logger: LoggerReadout | None = None
    patient_ref: PatientRef | None = Field(
        default=None, description="The order's patient (added in 1.2: the FHIR Specimen needs "
                                  "its subject).")


class SpecimenRejected(_LabRecord):
    """The tube failed inspection; the first reason is the main one."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.specimen.rejected.v1"

    order_id: Identifier
    barcode: Barcode
    lab_centre: InstitutionId
    tests: tuple[TestCode, ...] = Field(min_length=1, max_length=50)
    reasons: tuple[RejectionReason, ...] = Field(min_length=1, max_length=9)
    inspection: Inspection | None = None
    logger: LoggerReadout | None = None
    rejected_by: Identifier
    rejected_at: UtcDateTime
    patient_ref: PatientRef | None = Field(
        default=None, description="The order's patient (added in 1.2: the FHIR Specimen needs "
                                  "its subject).")

    @model_validator(mode="after")
    def _distinct(self) -> SpecimenRejected:
        _unique(self.reasons, "reasons")
        return self


class RecollectionRequested(_LabRecord):
    """The clinic is asked to draw a new tube (new barcode, same order)."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.specimen.recollection_requested.v1"

    order_id: Identifier
    barcode: Barcode = Field(description="The rejected tube.")
    ordering_institution: InstitutionId
    tests: tuple[TestCode, ...] = Field(min_length=1, max_length=50)
    tube: TubeType
    reasons: tuple[RejectionReason, ...] = Field(min_length=1, max_length=9)
    requested_at: UtcDateTime


class LabResultsReported(_LabRecord):
    """Results of a tube with ranges and flags, before technical confirmation."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.results.reported.v1"

    order_id: Identifier
    barcode: Barcode
    analyser_id: Identifier
    run_at: UtcDateTime
    observations: tuple[Observation, ...] = Field(min_length=1, max_length=100)
    reported_at: UtcDateTime
    patient_ref: PatientRef | None = Field(
        default=None, description="The order's patient (added in 1.2: the FHIR Observation needs "
                                  "its subject).")
    collected_at: UtcDateTime | None = Field(
        default=None, description="When the tube was collected (added in 1.2: the FHIR "
                                  "Observation's effective time).")


class LabResultsConfirmed(_LabRecord):
    """A technologist confirmed the results (技术审核)."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.results.confirmed.v1"

    order_id: Identifier
    barcode: Barcode
    observation_ids: tuple[Identifier, ...] = Field(min_length=1, max_length=100)
    confirmed_by: Identifier
    confirmed_at: UtcDateTime


class CriticalValueRaised(_LabRecord):
    """A confirmed result is critical; the ordering clinic must acknowledge it."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.critical_value.raised.v1"

    order_id: Identifier
    critical_id: Identifier
    patient_ref: PatientRef
    ordering_institution: InstitutionId
    lab_centre: InstitutionId
    barcode: Barcode
    observation_id: Identifier
    test_code: TestCode
    value: Quantity | None = None
    comparator: Comparator | None = None
    coded_value: CodedValue | None = None
    unit: Unit | None = None
    direction: CriticalDirection
    confirmed_by: Identifier
    raised_at: UtcDateTime
    escalate_at: UtcDateTime

    @model_validator(mode="after")
    def _numeric_or_coded(self) -> CriticalValueRaised:
        if (self.value is None) == (self.coded_value is None):
            raise ValueError("exactly one of value and coded_value")
        if self.value is not None and self.unit is None:
            raise ValueError("a numeric value needs its unit")
        return self


class CriticalValueCallBackRecorded(_LabRecord):
    """A lab call to the ordering clinic about a critical value, and how it went."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.critical_value.call_back_recorded.v1"

    order_id: Identifier
    critical_id: Identifier
    called_by: Identifier
    reached: Identifier | None = Field(default=None, description="Who answered, if anyone.")
    outcome: CallBackOutcome
    called_at: UtcDateTime

    @model_validator(mode="after")
    def _reached_iff_answered(self) -> CriticalValueCallBackRecorded:
        if (self.outcome is CallBackOutcome.unable_to_reach) != (self.reached is None):
            raise ValueError("reached is set exactly when someone answered")
        return self


class CriticalValueAcknowledged(_LabRecord):
    """The ordering institution acknowledged with read-back: the clock stops."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.critical_value.acknowledged.v1"

    order_id: Identifier
    critical_id: Identifier
    ordering_institution: InstitutionId
    acknowledged_by: Identifier
    channel: AckChannel
    escalation_level: int = Field(default=0, ge=0)
    acknowledged_at: UtcDateTime


class CriticalValueEscalated(_LabRecord):
    """Not acknowledged in time: the next person on the on-duty roster is called."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.critical_value.escalated.v1"

    order_id: Identifier
    critical_id: Identifier
    level: int = Field(ge=1)
    escalated_to: Identifier
    escalated_at: UtcDateTime
    next_escalation_at: UtcDateTime


class LabReportVerified(_LabRecord):
    """A lab physician verified the report (→ DiagnosticReport); recognised
    observations become recognised results until `valid_until`."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.report.verified.v1"

    order_id: Identifier
    report_id: Identifier
    patient_ref: PatientRef
    ordering_institution: InstitutionId
    lab_centre: InstitutionId
    verified_by: Identifier
    verified_at: UtcDateTime
    observations: tuple[Observation, ...] = Field(min_length=1, max_length=200)
    recognitions: tuple[Recognition, ...] = Field(default=(), max_length=200)


class LabReportAmended(_LabRecord):
    """A new revision of a verified report; the original is kept."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.report.amended.v1"

    order_id: Identifier
    report_id: Identifier
    revision: int = Field(ge=2)
    reason: AmendmentReason
    patient_ref: PatientRef
    ordering_institution: InstitutionId
    lab_centre: InstitutionId
    amended_by: Identifier
    amended_at: UtcDateTime
    observations: tuple[Observation, ...] = Field(min_length=1, max_length=200)
    superseded_observation_ids: tuple[Identifier, ...] = Field(default=(), max_length=200)
    recognitions: tuple[Recognition, ...] = Field(default=(), max_length=200)


class RecognisedResultAmended(_LabRecord):
    """Told to an order that reused a result which has since been amended."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.recognised_result.amended.v1"

    order_id: Identifier = Field(description="The order that reused the result.")
    ordering_institution: InstitutionId
    test_code: TestCode
    reused: RecognisedResult
    replacement: RecognisedResult | None = Field(
        default=None, description="The amended result, if it is still recognised."
    )
    amended_at: UtcDateTime


class LabTestsCancelled(_LabRecord):
    CE_TYPE: ClassVar[str] = "yigongti.lab.tests.cancelled.v1"

    order_id: Identifier
    tests: tuple[TestCode, ...] = Field(min_length=1, max_length=50)
    order_cancelled: bool
    patient_ref: PatientRef | None = Field(
        default=None, description="The order's patient (added in 1.1: the FHIR ServiceRequest "
                                  "needs its subject).")
    reason: CancellationReason
    cancelled_by: Identifier
    cancelled_at: UtcDateTime


class ChargesPosted(_LabRecord):
    """One test's charge on the visit, once it is resulted (→ Claim item)."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.charges.posted.v1"

    order_id: Identifier
    charge_id: Identifier
    visit_id: Identifier
    patient_ref: PatientRef
    billing_institution: InstitutionId
    test_code: TestCode
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


class ChargesReversed(_LabRecord):
    """A posted charge is taken back (the test was cancelled)."""

    CE_TYPE: ClassVar[str] = "yigongti.lab.charges.reversed.v1"

    order_id: Identifier
    charge_id: Identifier = Field(description="The ChargesPosted being reversed.")
    visit_id: Identifier
    patient_ref: PatientRef
    billing_institution: InstitutionId
    item_code: ItemCode
    amount: Money
    reason: ReversalReason
    reversed_at: UtcDateTime


INTAKE: tuple[type[StrictModel], ...] = (
    LabOrderPlaced,
    SpecimenCollected,
    SpecimenDispatched,
    LabOrderCancelled,
    CriticalValueAck,
    AnalyserResults,
)
EVENTS: tuple[type[StrictModel], ...] = (
    LabOrderAccepted,
    DuplicateTestAvoided,
    SpecimenCollectionRecorded,
    SpecimenInTransit,
    SpecimenInTransitOverdue,
    SpecimenReceived,
    SpecimenRejected,
    RecollectionRequested,
    LabResultsReported,
    LabResultsConfirmed,
    CriticalValueRaised,
    CriticalValueCallBackRecorded,
    CriticalValueAcknowledged,
    CriticalValueEscalated,
    LabReportVerified,
    LabReportAmended,
    RecognisedResultAmended,
    LabTestsCancelled,
    ChargesPosted,
    ChargesReversed,
)
CONTRACTS = INTAKE + EVENTS

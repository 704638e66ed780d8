"""One valid instance of every contract: the journey of DESIGN §3 step 5.

Used as AsyncAPI message examples and by tests that need a record of each type.
Institutions come from refdata/changji.yaml; the patient ref is synthetic; test
codes are the lab catalogue's (services/lab/yigongti_lab/policy/catalogue.yaml).

The intake examples pass the lab service as published (tests/integration/lab/
test_lab_published_examples.py) when sent, in the order of `v1.INTAKE`, by the
terminals of `EXAMPLE_SENDERS`: the dev terminals of `make demo` and the tests
(deploy/yigongti_deploy/devkeys.py), registered for the clinic and its lab
centre. What each example is answered with is `EXAMPLE_OUTCOMES`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from .base import StrictModel
from .common import Age, AgeUnit, FieldError, IntakeRejected, Sex
from .lab import v1
from .lab.codes import (
    AckChannel,
    AmendmentReason,
    CallBackOutcome,
    CancellationReason,
    CriticalDirection,
    Flag,
    OverrideReason,
    PolicyCategory,
    Priority,
    ProcessingState,
    RejectionReason,
    ReversalReason,
    TubeType,
)
from .lab.parts import (
    AnalyserObservation,
    Inspection,
    LoggerReadout,
    Observation,
    OrderedTest,
    RecognisedResult,
    Recognition,
)

T0 = datetime(2025, 1, 15, 2, 0, tzinfo=UTC)
CLINIC = "652325-B01"  # 奇台县总医院乔仁乡分院 (the dev terminal's institution)
LAB = "652325-L01"  # 奇台县总医院医学检验共享中心 (the lab centre serving it)
OTHER_LAB = "652324-L01"  # 玛纳斯县总医院医学检验共享中心
PATIENT = "v1:" + "5d41402abc4b2a76b9719d911017c592" * 2
ORDER = "ORD-20250115-0001"
BARCODE = "T250115000123"


def _t(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


_TROPONIN = Observation(
    observation_id="OBS-1", code="89579-7", value=Decimal("2.35"), unit="ng/mL",
    reference_high=Decimal("0.04"), flag=Flag.H, critical=True,
)
_POTASSIUM = Observation(
    observation_id="OBS-2", code="2823-3", value=Decimal("4.1"), unit="mmol/L",
    reference_low=Decimal("3.5"), reference_high=Decimal("5.3"), flag=Flag.N,
)
_REUSED = RecognisedResult(
    report_id="RPT-20250110-0042", report_revision=1, observation_id="OBS-9",
    performed_by=OTHER_LAB, verified_at=_t(-7200), valid_until=_t(2880),
)

EXAMPLES: dict[type[StrictModel], StrictModel] = {
    m.__class__: m
    for m in (
        v1.LabOrderPlaced(
            order_id=ORDER, visit_id="VIS-0001", patient_ref=PATIENT, sex=Sex.male,
            age=Age(value=80, unit=AgeUnit.years), ordering_institution=CLINIC,
            ordering_clinician="STAFF-0107", priority=Priority.stat,
            tests=(OrderedTest(code="CTNI"), OrderedTest(code="K"),
                   OrderedTest(code="CBC"),
                   OrderedTest(code="GLU", override_reason=OverrideReason.emergency)),
            indications=("I21.9",), ordered_at=_t(0),
        ),
        v1.SpecimenCollected(
            barcode=BARCODE, order_id=ORDER, tests=("CTNI", "K"),
            tube=TubeType.serum_gold, collected_at=_t(5), centrifuged_at=_t(20),
            collector_id="STAFF-0212",
        ),
        v1.SpecimenDispatched(
            shipment_id="SHP-0001", barcodes=(BARCODE,), courier_id="STAFF-0300",
            temperature_logger_id="LOG-17", dispatched_at=_t(25), destination=LAB,
        ),
        v1.LabOrderCancelled(
            order_id=ORDER, tests=("CBC",), reason=CancellationReason.ordered_in_error,
            cancelled_by="STAFF-0107", cancelled_at=_t(10),
        ),
        v1.CriticalValueAck(
            order_id=ORDER, critical_id="CRIT-0001", received_by="STAFF-0107",
            read_back_confirmed=True, acknowledged_at=_t(80),
        ),
        v1.AnalyserResults(
            barcode=BARCODE, analyser_id="AN-COBAS-1", run_at=_t(60), message_id="MSG-77",
            observations=(
                AnalyserObservation(code="89579-7", value=Decimal("35.2"), unit="ng/L"),
                AnalyserObservation(code="2823-3", value=Decimal("4.1"), unit="mmol/L"),
            ),
        ),
        v1.LabOrderAccepted(
            order_id=ORDER, visit_id="VIS-0001", patient_ref=PATIENT,
            ordering_institution=CLINIC, lab_centre=LAB, priority=Priority.stat,
            tests=("CTNI", "K", "CBC", "GLU"), accepted_at=_t(1),
        ),
        v1.DuplicateTestAvoided(
            order_id=ORDER, test_code="CREA", patient_ref=PATIENT,
            ordering_institution=CLINIC, recognised=_REUSED, avoided_at=_t(1),
        ),
        v1.SpecimenCollectionRecorded(
            order_id=ORDER, barcode=BARCODE, tests=("CTNI", "K"),
            tube=TubeType.serum_gold, processing_state=ProcessingState.centrifuged,
            collected_at=_t(5), centrifuged_at=_t(20), collector_id="STAFF-0212",
            patient_ref=PATIENT,
        ),
        v1.SpecimenInTransit(
            order_id=ORDER, barcode=BARCODE, shipment_id="SHP-0001", courier_id="STAFF-0300",
            temperature_logger_id="LOG-17", dispatched_at=_t(25),
        ),
        v1.SpecimenInTransitOverdue(
            order_id=ORDER, barcode=BARCODE, shipment_id="SHP-0001", limiting_test="K",
            processing_state=ProcessingState.whole_blood, collected_at=_t(5),
            stable_until=_t(35), detected_at=_t(35),
        ),
        v1.SpecimenReceived(
            order_id=ORDER, barcode=BARCODE, lab_centre=LAB, received_by="STAFF-0401",
            received_at=_t(50), processing_state=ProcessingState.centrifuged,
            inspection=Inspection(
                not_haemolysed=True, not_lipaemic=True, not_clotted=True,
                volume_sufficient=True, right_tube=True, label_matches=True,
                free_haemoglobin_g_per_l=Decimal("0.3"),
            ),
            logger=LoggerReadout(logger_id="LOG-17", min_celsius=Decimal("3.1"),
                                 max_celsius=Decimal("6.8"), minutes_outside_band=0),
            patient_ref=PATIENT,
        ),
        v1.SpecimenRejected(
            order_id=ORDER, barcode="T250115000124", lab_centre=LAB, tests=("CBC",),
            reasons=(RejectionReason.clotted,), rejected_by="STAFF-0401", rejected_at=_t(51),
            patient_ref=PATIENT,
        ),
        v1.RecollectionRequested(
            order_id=ORDER, barcode="T250115000124", ordering_institution=CLINIC,
            tests=("CBC",), tube=TubeType.edta_k2, reasons=(RejectionReason.clotted,),
            requested_at=_t(51),
        ),
        v1.LabResultsReported(
            order_id=ORDER, barcode=BARCODE, analyser_id="AN-COBAS-1", run_at=_t(60),
            observations=(_TROPONIN, _POTASSIUM), reported_at=_t(61),
            patient_ref=PATIENT, collected_at=_t(5),
        ),
        v1.LabResultsConfirmed(
            order_id=ORDER, barcode=BARCODE, observation_ids=("OBS-1", "OBS-2"),
            confirmed_by="STAFF-0402", confirmed_at=_t(65),
        ),
        v1.CriticalValueRaised(
            order_id=ORDER, critical_id="CRIT-0001", patient_ref=PATIENT,
            ordering_institution=CLINIC, lab_centre=LAB, barcode=BARCODE,
            observation_id="OBS-1", test_code="CTNI", value=Decimal("2.35"),
            unit="ng/mL", direction=CriticalDirection.high, confirmed_by="STAFF-0402",
            raised_at=_t(65), escalate_at=_t(80),
        ),
        v1.CriticalValueCallBackRecorded(
            order_id=ORDER, critical_id="CRIT-0001", called_by="STAFF-0402",
            reached="STAFF-0107", outcome=CallBackOutcome.confirmed_read_back,
            called_at=_t(70),
        ),
        v1.CriticalValueAcknowledged(
            order_id=ORDER, critical_id="CRIT-0001", ordering_institution=CLINIC,
            acknowledged_by="STAFF-0107", channel=AckChannel.terminal, acknowledged_at=_t(80),
        ),
        v1.CriticalValueEscalated(
            order_id=ORDER, critical_id="CRIT-0001", level=1, escalated_to="STAFF-0108",
            escalated_at=_t(80), next_escalation_at=_t(95),
        ),
        v1.LabReportVerified(
            order_id=ORDER, report_id="RPT-20250115-0001", patient_ref=PATIENT,
            ordering_institution=CLINIC, lab_centre=LAB, verified_by="STAFF-0501",
            verified_at=_t(90), observations=(_TROPONIN, _POTASSIUM),
            recognitions=(Recognition(observation_id="OBS-2", code="2823-3",
                                      valid_until=_t(90 + 7 * 1440)),),
        ),
        v1.LabReportAmended(
            order_id=ORDER, report_id="RPT-20250115-0001", revision=2,
            reason=AmendmentReason.transcription_error, patient_ref=PATIENT,
            ordering_institution=CLINIC, lab_centre=LAB, amended_by="STAFF-0501",
            amended_at=_t(200),
            observations=(_TROPONIN, _POTASSIUM.model_copy(
                update={"observation_id": "OBS-3", "value": Decimal("4.2")})),
            superseded_observation_ids=("OBS-2",),
            recognitions=(Recognition(observation_id="OBS-3", code="2823-3",
                                      valid_until=_t(90 + 7 * 1440)),),
        ),
        v1.RecognisedResultAmended(
            order_id="ORD-20250116-0009", ordering_institution="652325-H01",
            test_code="K",
            reused=_REUSED.model_copy(update={"performed_by": LAB}),
            replacement=_REUSED.model_copy(update={"performed_by": LAB, "report_revision": 2}),
            amended_at=_t(200),
        ),
        v1.LabTestsCancelled(
            order_id=ORDER, tests=("CBC",), order_cancelled=False,
            patient_ref=PATIENT,
            reason=CancellationReason.ordered_in_error, cancelled_by="STAFF-0107",
            cancelled_at=_t(10),
        ),
        v1.ChargesPosted(
            order_id=ORDER, charge_id="CHG-0001", visit_id="VIS-0001", patient_ref=PATIENT,
            billing_institution=CLINIC, test_code="K", item_code="250304001",
            policy_category=PolicyCategory.a, quantity=1, unit_price=Decimal("6.00"),
            amount=Decimal("6.00"), price_table_id="XJ-2024-LAB", posted_at=_t(61),
        ),
        v1.ChargesReversed(
            order_id=ORDER, charge_id="CHG-0002", visit_id="VIS-0001", patient_ref=PATIENT,
            billing_institution=CLINIC, item_code="250101015", amount=Decimal("20.00"),
            reason=ReversalReason.test_cancelled, reversed_at=_t(62),
        ),
        IntakeRejected(
            key=ORDER, service="lab", rejected_id="6f1c2a8e-9b7d-4c1e-8a52-1f0e3d2c4b5a",
            rejected_type="yigongti.lab.order.placed.v1", sender="/terminals/demo-terminal-1",
            reason="schema_violation",
            fields=(FieldError(field="tests.0.code", code="string_pattern_mismatch"),),
            rejected_at=_t(0.5),
        ),
    )
}


# Who sends each intake example: the dev terminals (deploy/yigongti_deploy/
# devkeys.py; a test checks the ids), a clinic's terminal registered for CLINIC
# and the LIS bridge of its lab centre, registered for LAB.
EXAMPLE_TERMINAL = "demo-terminal-1"
EXAMPLE_LIS_TERMINAL = "lis-652325-L01"
EXAMPLE_SENDERS: dict[type[StrictModel], tuple[str, str]] = {
    v1.LabOrderPlaced: (EXAMPLE_TERMINAL, CLINIC),
    v1.SpecimenCollected: (EXAMPLE_TERMINAL, CLINIC),
    v1.SpecimenDispatched: (EXAMPLE_TERMINAL, CLINIC),
    v1.LabOrderCancelled: (EXAMPLE_TERMINAL, CLINIC),
    v1.CriticalValueAck: (EXAMPLE_TERMINAL, CLINIC),
    v1.AnalyserResults: (EXAMPLE_LIS_TERMINAL, LAB),
}

# What the lab answers each intake example with, sent in the order of v1.INTAKE.
EXAMPLE_OUTCOMES: dict[type[StrictModel], dict[str, object]] = {
    v1.LabOrderPlaced: {"outcome": "accepted",
                        "answer": v1.LabOrderAccepted.CE_TYPE},
    v1.SpecimenCollected: {"outcome": "accepted",
                           "answer": v1.SpecimenCollectionRecorded.CE_TYPE},
    v1.SpecimenDispatched: {"outcome": "accepted",
                            "answer": v1.SpecimenInTransit.CE_TYPE},
    v1.LabOrderCancelled: {"outcome": "accepted",
                           "answer": v1.LabTestsCancelled.CE_TYPE},
    v1.CriticalValueAck: {
        "outcome": "refused", "reason": "unknown_critical_value",
        "why": "CRIT-0001 was never raised: a real acknowledgement carries the critical_id "
               "of a CriticalValueRaised the clinic received."},
    v1.AnalyserResults: {
        "outcome": "parked", "then_reason": "prerequisite_missing",
        "why": "The tube has not been received at the lab centre (lab staff record the "
               "receipt over HTTP, POST /specimens/{barcode}/receipt). The results wait for "
               "it, and without a receipt within the grace period they are refused "
               "prerequisite_missing (fields: barcode not_found)."},
}

# The other services' examples, in one table (AsyncAPI documents and tests).
from .diagnosis.examples import EXAMPLE_OUTCOMES as _DIAGNOSIS_OUTCOMES  # noqa: E402
from .diagnosis.examples import EXAMPLE_SENDERS as _DIAGNOSIS_SENDERS  # noqa: E402
from .diagnosis.examples import EXAMPLES as _DIAGNOSIS  # noqa: E402

EXAMPLES.update(_DIAGNOSIS)
EXAMPLE_SENDERS.update(_DIAGNOSIS_SENDERS)
EXAMPLE_OUTCOMES.update(_DIAGNOSIS_OUTCOMES)

from .referral import examples as _referral  # noqa: E402

EXAMPLES.update(_referral.EXAMPLES)
EXAMPLE_SENDERS.update(_referral.EXAMPLE_SENDERS)
EXAMPLE_OUTCOMES.update(_referral.EXAMPLE_OUTCOMES)

from .settlement import v1 as _settlement_v1  # noqa: E402
from .settlement.examples import EXAMPLES as _SETTLEMENT  # noqa: E402

EXAMPLES.update(_SETTLEMENT)
# The settlement's intake examples, sent by the dev terminal: each names what
# exists only after an identity check over HTTPS, so alone they are refused.
EXAMPLE_SENDERS.update({m: (EXAMPLE_TERMINAL, CLINIC) for m in _settlement_v1.INTAKE})
EXAMPLE_OUTCOMES.update({
    _settlement_v1.SettlementRequested: {
        "outcome": "refused", "reason": "identity_unknown",
        "why": "identity_id names the identity check made at admission over HTTPS "
               "(POST /identity/verify); without one the request is refused."},
    _settlement_v1.SettlementReversalRequested: {
        "outcome": "refused", "reason": "unknown_settlement",
        "why": "The settlement it names was never completed."},
})

"""The lab's events as HL7 FHIR R4 (4.0.1) resources (DESIGN §4), so that the
platform can hand orders, specimens, results and reports to the outside world.

`resources(event)` gives the resources one published event stands for:

| event                                   | resources                              |
|-----------------------------------------|----------------------------------------|
| LabOrderAccepted                        | ServiceRequest per accepted test       |
| DuplicateTestAvoided                    | ServiceRequest, revoked, citing the    |
|                                         | recognised Observation                 |
| LabTestsCancelled                       | ServiceRequest per test, revoked       |
| SpecimenCollectionRecorded / Received   | Specimen, available                    |
| SpecimenRejected                        | Specimen, unsatisfactory, conditions   |
| SpecimenInTransit / InTransitOverdue    | Task (transport of the Specimen)       |
| RecollectionRequested                   | Task (recollect), owned by the clinic  |
| LabResultsReported                      | Observation per line, preliminary      |
| LabReportVerified / Amended             | DiagnosticReport final / amended, with |
|                                         | its Observations                       |
| CriticalValueRaised                     | Communication (alert about the         |
|                                         | Observation)                           |
| CriticalValueCallBackRecorded /         | Communication in response to the alert |
| Acknowledged / Escalated                |                                        |
| RecognisedResultAmended                 | Communication to the reusing clinic    |
| ChargesPosted / ChargesReversed         | ChargeItem billable / aborted          |

`UNMAPPED` names the events with no resource of their own, and why.
Pure: catalogue look-ups only. Tests validate every mapping with FHIR.js.

Times of a result: `effective[x]` is when its tube was collected (the
physiologically relevant time, R4 Observation.effective[x]), the analyser's run
time is the `observation-analysis-date-time` extension
(http://hl7.org/fhir/StructureDefinition/observation-analysis-date-time: "when
the analysis of the specimen occurred, while Observation.effective[x] is when
the specimen was collected"), and `issued` is when it was released: reported
(preliminary) or verified (final, amended).

Decimals are `Decimal`s: write a resource with `yigongti_contracts.fhir.dumps`,
which keeps their reported precision.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from yigongti_contracts import fhir as f
from yigongti_contracts.base import StrictModel
from yigongti_contracts.common import IntakeRejected
from yigongti_contracts.fhir import dumps  # noqa: F401  (the JSON writer of these resources)
from yigongti_contracts.lab import v1
from yigongti_contracts.lab.codes import (
    AckChannel,
    CallBackOutcome,
    Flag,
    ReversalReason,
    TubeType,
)
from yigongti_contracts.lab.parts import Observation, Recognition

from . import catalogue
from .domain import SpecimenState, TestStatus

ORDER = f.sid("lab-order")  # the order (requisition)
ORDER_TEST = f.sid("lab-order-test")  # one ordered test: "<order_id>/<test code>"
BARCODE = f.sid("specimen-barcode")
OBSERVATION = f.sid("lab-observation")
REPORT = f.sid("lab-report")  # "<report_id>/<revision>"; revisions share the report's id
CRITICAL = f.sid("critical-value")
SHIPMENT = f.sid("specimen-shipment")
ANALYSER = f.sid("analyser")
CHARGE = f.sid("lab-charge")

TEST_CODES = f.code_system("lab-test")  # the catalogue's codes ("K", "CBC")
TUBE = f.code_system("tube-type")
REJECTION = f.code_system("specimen-rejection-reason")
CODED_RESULT = f.code_system("lab-coded-result")
TASK_CODE = f.code_system("lab-task")
PRICE_ITEM = f.code_system("price-item")

LAB_SECTION = f.concept(f.coding(f.V2_0074, "LAB", "Laboratory"))
LAB_REPORT_CODE = f.concept(f.coding(f.LOINC, "11502-2", "Laboratory report"))
LAB_PROCEDURE = f.concept(f.coding("http://snomed.info/sct", "108252007", "Laboratory procedure"))

# What each tube holds (HL7 v2 table 0487): serum, plasma, whole blood or urine.
# A tube of blood-gas tests holds arterial blood whatever its container
# (ARTERIAL_BLOOD), not the plasma a lithium heparin tube would give.
SPECIMEN_TYPE = {
    TubeType.serum_gold: ("SER", "Serum"),
    TubeType.lithium_heparin: ("PLAS", "Plasma"),
    TubeType.edta_k2: ("BLD", "Whole blood"),
    TubeType.sodium_citrate: ("PLAS", "Plasma"),
    TubeType.fluoride_oxalate: ("PLAS", "Plasma"),
    TubeType.blood_culture: ("BLD", "Whole blood"),
    TubeType.urine: ("UR", "Urine"),
}
ARTERIAL_BLOOD = ("BLDA", "Blood arterial")  # HL7 v2 table 0487
ANALYSIS_TIME = "http://hl7.org/fhir/StructureDefinition/observation-analysis-date-time"

# Rejection reasons that HL7 v2 table 0493 (specimen condition) names.
V2_CONDITION = {"haemolysed": ("HEM", "Hemolyzed"), "clotted": ("CLOT", "Clotted")}

# Flag, and whether critical → v3 ObservationInterpretation.
INTERPRETATION = {
    (Flag.H, False): "H", (Flag.L, False): "L", (Flag.N, False): "N", (Flag.A, False): "A",
    (Flag.H, True): "HH", (Flag.L, True): "LL", (Flag.A, True): "AA", (Flag.N, True): "AA",
}

UNMAPPED = {
    v1.LabResultsConfirmed: "a step inside the lab: FHIR has no status between preliminary and "
                            "final, the Observations stay preliminary until the report is verified",
    IntakeRejected: "an answer to the sender of an intake record, about that record: no "
                    "clinical fact of the order, specimen or patient, so no resource stands "
                    "for it",
}


# --- building blocks -----------------------------------------------------------


LOINC_SHAPE = re.compile(r"^[0-9]{1,7}-[0-9]$")  # a LOINC code: number, hyphen, check digit


def test_concept(code: str) -> dict[str, Any]:
    """The test's LOINC code where the catalogue has one (or the code is one),
    and always the code as the event gives it."""
    test = catalogue.load_catalogue().get(code)
    loinc = test.loinc if test is not None else code if LOINC_SHAPE.match(code) else None
    codings = [f.coding(f.LOINC, loinc)] if loinc else []
    codings.append(f.coding(TEST_CODES, code, test.name_zh if test else None))
    return {"coding": codings}


def order_test(order_id: str, code: str) -> dict[str, Any]:
    return f.ref("ServiceRequest", ORDER_TEST, f"{order_id}/{code}")


def specimen_ref(barcode: str) -> dict[str, Any]:
    return f.ref("Specimen", BARCODE, barcode)


def observation_ref(observation_id: str) -> dict[str, Any]:
    return f.ref("Observation", OBSERVATION, observation_id)


def critical_alert_ref(critical_id: str) -> dict[str, Any]:
    return f.ref("Communication", CRITICAL, critical_id)


def _service_request(order_id: str, code: str, *, status: str, subject: dict[str, Any],
                     **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "identifier": [f.identifier(ORDER_TEST, f"{order_id}/{code}")],
        "requisition": f.identifier(ORDER, order_id),
        "status": status,
        "intent": "order",
        "category": [LAB_PROCEDURE],
        "code": test_concept(code),
        "subject": subject,
        **extra,
    }


def specimen_type(tube: TubeType, tests: Iterable[str]) -> tuple[str, str]:
    """HL7 v2 table 0487 code and display of what a tube of `tests` holds."""
    known = catalogue.load_catalogue()
    if any(code in known and known[code].discipline is catalogue.Discipline.blood_gas
           for code in tests):
        return ARTERIAL_BLOOD
    return SPECIMEN_TYPE[tube]


def _time(at: datetime | str) -> str:
    """A datetime, or its ISO text (as the store's views give it), as FHIR dateTime."""
    return f.instant(datetime.fromisoformat(at) if isinstance(at, str) else at)


def observation(obs: Observation, *, status: str, barcode: str | None = None,
                patient_ref: str | None = None, effective=None, issued=None,
                analysed=None, performer: str | None = None, analyser: str | None = None,
                recognition: Recognition | None = None) -> dict[str, Any]:
    """`effective`: the tube's collection; `analysed`: the analyser's run;
    `issued`: the result's release (datetimes, or ISO texts as views give them)."""
    out: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [f.identifier(OBSERVATION, obs.observation_id)],
        "status": status,
        "category": [f.concept(f.coding(
            "http://terminology.hl7.org/CodeSystem/observation-category", "laboratory"))],
        "code": test_concept(obs.code),
    }
    if patient_ref:
        out["subject"] = f.patient(patient_ref)
    if effective is not None:
        out["effectiveDateTime"] = _time(effective)
    if issued is not None:
        out["issued"] = _time(issued)
    if performer:
        out["performer"] = [f.organization(performer)]
    if obs.value is not None:
        out["valueQuantity"] = f.quantity(obs.value, obs.unit,
                                          obs.comparator.value if obs.comparator else None)
    else:
        out["valueCodeableConcept"] = f.concept(f.coding(CODED_RESULT, obs.coded_value))
    out["interpretation"] = [f.concept(f.coding(
        f.V3_INTERPRETATION, INTERPRETATION[(obs.flag, obs.critical)]))]
    if barcode:
        out["specimen"] = specimen_ref(barcode)
    if analyser:
        out["device"] = f.ref("Device", ANALYSER, analyser)
    if obs.reference_low is not None or obs.reference_high is not None:
        band: dict[str, Any] = {}
        if obs.reference_low is not None:
            band["low"] = f.quantity(obs.reference_low, obs.unit)
        if obs.reference_high is not None:
            band["high"] = f.quantity(obs.reference_high, obs.unit)
        out["referenceRange"] = [band]
    extensions = []
    if analysed is not None:
        extensions.append({"url": ANALYSIS_TIME, "valueDateTime": _time(analysed)})
    if obs.delta_check_failed:
        extensions.append({"url": f.extension_url("delta-check-failed"), "valueBoolean": True})
    if recognition is not None:
        # 互认: recognised by every member hospital until then.
        extensions.append({"url": f.extension_url("recognised-until"),
                           "valueDateTime": f.instant(recognition.valid_until)})
    if extensions:
        out["extension"] = extensions
    return out


def _diagnostic_report(e: v1.LabReportVerified | v1.LabReportAmended, *, status: str,
                       revision: int, issued, interpreter: str) -> list[dict[str, Any]]:
    recognised = {r.observation_id: r for r in e.recognitions}
    observations = [
        observation(o, status=status, patient_ref=e.patient_ref, issued=issued,
                    performer=e.lab_centre, recognition=recognised.get(o.observation_id))
        for o in e.observations
    ]
    report = _report(e.order_id, e.patient_ref, e.lab_centre,
                     [o.observation_id for o in e.observations])
    report["identifier"].insert(0, f.identifier(REPORT, f"{e.report_id}/{revision}"))
    report.update(status=status, issued=f.instant(issued),
                  resultsInterpreter=[f.practitioner(interpreter)])
    return [report, *observations]


def _report(order_id: str, patient_ref: str, lab_centre: str,
            observation_ids: list[str]) -> dict[str, Any]:
    """A DiagnosticReport of the order without its status and revision."""
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [f.identifier(ORDER, order_id)],
        "category": [LAB_SECTION],
        "code": LAB_REPORT_CODE,
        "subject": f.patient(patient_ref),
        "performer": [f.organization(lab_centre)],
    }
    if observation_ids:
        report["result"] = [observation_ref(i) for i in observation_ids]
    return report


def _specimen(barcode: str, *, status: str, patient_ref: str | None,
              tube: TubeType | None = None, tests: Iterable[str] = (),
              **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Specimen",
        "identifier": [f.identifier(BARCODE, barcode)],
        "accessionIdentifier": f.identifier(BARCODE, barcode),
        "status": status,
    }
    # Events written before contracts 1.2 do not carry the patient.
    if patient_ref is not None:
        out["subject"] = f.patient(patient_ref)
    if tube is not None:
        code, display = specimen_type(tube, tests)
        out["type"] = f.concept(f.coding(f.V2_0487, code, display))
        out["container"] = [{"type": f.concept(f.coding(TUBE, tube.value))}]
    out.update(extra)
    return out


def _task(code: str, *, status: str, focus: dict[str, Any], authored, **extra: Any
          ) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": status,
        "intent": "order",
        "code": f.concept(f.coding(TASK_CODE, code)),
        "focus": focus,
        "authoredOn": f.instant(authored),
        **extra,
    }


def _communication(*, status: str, sent, category: str = "alert", **extra: Any
                   ) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": status,
        "category": [f.concept(f.coding(f.COMMUNICATION_CATEGORY, category))],
        "sent": f.instant(sent),
        **extra,
    }


def _reasons(reasons: Iterable[str]) -> list[dict[str, Any]]:
    out = []
    for reason in reasons:
        codings = [f.coding(REJECTION, reason)]
        if reason in V2_CONDITION:
            codings.insert(0, f.coding(f.V2_0493, *V2_CONDITION[reason]))
        out.append({"coding": codings})
    return out


# --- one function per event ------------------------------------------------------


def _accepted(e: v1.LabOrderAccepted) -> list[dict[str, Any]]:
    return [
        _service_request(e.order_id, code, status="active", subject=f.patient(e.patient_ref),
                         authoredOn=f.instant(e.accepted_at),
                         requester=f.organization(e.ordering_institution),
                         priority=e.priority.value,
                         encounter=f.ref("Encounter", f.VISIT, e.visit_id),
                         performer=[f.organization(e.lab_centre)])
        for code in e.tests
    ]


def _avoided(e: v1.DuplicateTestAvoided) -> list[dict[str, Any]]:
    # Not performed: the recognised result of another member hospital stands in.
    return [_service_request(
        e.order_id, e.test_code, status="revoked", subject=f.patient(e.patient_ref),
        authoredOn=f.instant(e.avoided_at), requester=f.organization(e.ordering_institution),
        supportingInfo=[observation_ref(e.recognised.observation_id)],
        performer=[f.organization(e.recognised.performed_by)])]


def _cancelled(e: v1.LabTestsCancelled) -> list[dict[str, Any]]:
    # Events written before 1.1 do not carry the patient: the order names it.
    subject = f.patient(e.patient_ref) if e.patient_ref \
        else {"type": "Patient", "display": "the patient of the order"}
    return [_service_request(e.order_id, code, status="revoked", subject=subject)
            for code in e.tests]


def _collected(e: v1.SpecimenCollectionRecorded) -> list[dict[str, Any]]:
    collection: dict[str, Any] = {"collector": f.practitioner(e.collector_id),
                                  "collectedDateTime": f.instant(e.collected_at)}
    extra: dict[str, Any] = {"request": [order_test(e.order_id, c) for c in e.tests],
                             "collection": collection}
    if e.centrifuged_at is not None:
        extra["processing"] = [{"procedure": f.concept(f.coding(TASK_CODE, "centrifuge")),
                                "timeDateTime": f.instant(e.centrifuged_at)}]
    if e.recollection_of is not None:
        extra["extension"] = [{"url": f.extension_url("recollection-of"),
                               "valueIdentifier": f.identifier(BARCODE, e.recollection_of)}]
    return [_specimen(e.barcode, status="available", patient_ref=e.patient_ref, tube=e.tube,
                      tests=e.tests, **extra)]


def _received(e: v1.SpecimenReceived) -> list[dict[str, Any]]:
    return [_specimen(e.barcode, status="available", patient_ref=e.patient_ref,
                      receivedTime=f.instant(e.received_at))]


def _rejected(e: v1.SpecimenRejected) -> list[dict[str, Any]]:
    return [_specimen(e.barcode, status="unsatisfactory", patient_ref=e.patient_ref,
                      condition=_reasons(e.reasons),
                      request=[order_test(e.order_id, c) for c in e.tests])]


def _in_transit(e: v1.SpecimenInTransit) -> list[dict[str, Any]]:
    return [_task("transport", status="in-progress", focus=specimen_ref(e.barcode),
                  authored=e.dispatched_at,
                  identifier=[f.identifier(SHIPMENT, e.shipment_id)],
                  owner=f.practitioner(e.courier_id),
                  executionPeriod={"start": f.instant(e.dispatched_at)})]


def _overdue(e: v1.SpecimenInTransitOverdue) -> list[dict[str, Any]]:
    extra: dict[str, Any] = {
        "businessStatus": f.concept(f.coding(TASK_CODE, "stability-exceeded")),
        "restriction": {"period": {"end": f.instant(e.stable_until)}},
        "lastModified": f.instant(e.detected_at),
        "reasonCode": test_concept(e.limiting_test),
    }
    if e.shipment_id:
        extra["identifier"] = [f.identifier(SHIPMENT, e.shipment_id)]
    return [_task("transport", status="in-progress", focus=specimen_ref(e.barcode),
                  authored=e.collected_at, **extra)]


def _recollect(e: v1.RecollectionRequested) -> list[dict[str, Any]]:
    return [_task("recollect", status="requested", focus=specimen_ref(e.barcode),
                  authored=e.requested_at,
                  basedOn=[order_test(e.order_id, c) for c in e.tests],
                  owner=f.organization(e.ordering_institution),
                  reasonCode=_reasons(e.reasons)[0],
                  input=[{"type": f.concept(f.coding(TASK_CODE, "tube")),
                          "valueCodeableConcept": f.concept(f.coding(TUBE, e.tube.value))}])]


def _reported(e: v1.LabResultsReported) -> list[dict[str, Any]]:
    # Events written before contracts 1.2 carry neither patient nor collection time.
    return [observation(o, status="preliminary", barcode=e.barcode, patient_ref=e.patient_ref,
                        effective=e.collected_at, analysed=e.run_at, issued=e.reported_at,
                        analyser=e.analyser_id)
            for o in e.observations]


def _verified(e: v1.LabReportVerified) -> list[dict[str, Any]]:
    return _diagnostic_report(e, status="final", revision=1, issued=e.verified_at,
                              interpreter=e.verified_by)


def _amended(e: v1.LabReportAmended) -> list[dict[str, Any]]:
    return _diagnostic_report(e, status="amended", revision=e.revision, issued=e.amended_at,
                              interpreter=e.amended_by)


def _critical_raised(e: v1.CriticalValueRaised) -> list[dict[str, Any]]:
    return [_communication(
        status="in-progress", sent=e.raised_at, priority="stat",
        identifier=[f.identifier(CRITICAL, e.critical_id)],
        subject=f.patient(e.patient_ref), about=[observation_ref(e.observation_id)],
        sender=f.organization(e.lab_centre), recipient=[f.organization(e.ordering_institution)],
        reasonCode=[test_concept(e.test_code)])]


def _call_back(e: v1.CriticalValueCallBackRecorded) -> list[dict[str, Any]]:
    reached = e.outcome is not CallBackOutcome.unable_to_reach
    extra: dict[str, Any] = {}
    if e.reached is not None:
        extra["recipient"] = [f.practitioner(e.reached)]
    return [_communication(
        status="completed" if reached else "not-done", sent=e.called_at,
        inResponseTo=[critical_alert_ref(e.critical_id)],
        medium=[f.concept(f.coding(f.V3_PARTICIPATION_MODE, "PHONE", "telephone"))],
        sender=f.practitioner(e.called_by),
        statusReason=f.concept(f.coding(f.code_system("call-back-outcome"), e.outcome.value)),
        **extra)]


def _acknowledged(e: v1.CriticalValueAcknowledged) -> list[dict[str, Any]]:
    mode = ("PHONE", "telephone") if e.channel is AckChannel.call_back \
        else ("ELECTRONIC", "electronic data")
    return [_communication(
        status="completed", sent=e.acknowledged_at, received=f.instant(e.acknowledged_at),
        inResponseTo=[critical_alert_ref(e.critical_id)],
        medium=[f.concept(f.coding(f.V3_PARTICIPATION_MODE, *mode))],
        sender=f.practitioner(e.acknowledged_by))]


def _escalated(e: v1.CriticalValueEscalated) -> list[dict[str, Any]]:
    return [_communication(
        status="in-progress", sent=e.escalated_at, priority="stat",
        inResponseTo=[critical_alert_ref(e.critical_id)],
        recipient=[f.practitioner(e.escalated_to)])]


def _recognised_amended(e: v1.RecognisedResultAmended) -> list[dict[str, Any]]:
    about = [observation_ref(e.reused.observation_id)]
    if e.replacement is not None:
        about.append(observation_ref(e.replacement.observation_id))
    return [_communication(
        status="completed", sent=e.amended_at, category="notification",
        about=about, recipient=[f.organization(e.ordering_institution)],
        sender=f.organization(e.reused.performed_by),
        basedOn=[order_test(e.order_id, e.test_code)])]


def _charge(e: v1.ChargesPosted) -> list[dict[str, Any]]:
    return [{
        "resourceType": "ChargeItem",
        "identifier": [f.identifier(CHARGE, e.charge_id)],
        "status": "billable",
        "code": f.concept(f.coding(PRICE_ITEM, e.item_code)),
        "subject": f.patient(e.patient_ref),
        "context": f.ref("Encounter", f.VISIT, e.visit_id),
        "occurrenceDateTime": f.instant(e.posted_at),
        "requestingOrganization": f.organization(e.billing_institution),
        "quantity": {"value": e.quantity},
        "priceOverride": f.money(e.amount),
        "enteredDate": f.instant(e.posted_at),
        # ChargeItem.service names performed services only (R4): the order goes here.
        "supportingInformation": [order_test(e.order_id, e.test_code)],
        "extension": [
            {"url": f.extension_url("policy-category"), "valueCode": e.policy_category.value},
            {"url": f.extension_url("price-table"), "valueString": e.price_table_id},
            {"url": f.extension_url("unit-price"), "valueMoney": f.money(e.unit_price)},
        ],
    }]


def _charge_reversed(e: v1.ChargesReversed) -> list[dict[str, Any]]:
    status = "entered-in-error" if e.reason is ReversalReason.posted_in_error else "aborted"
    return [{
        "resourceType": "ChargeItem",
        "identifier": [f.identifier(CHARGE, e.charge_id)],
        "status": status,
        "code": f.concept(f.coding(PRICE_ITEM, e.item_code)),
        "subject": f.patient(e.patient_ref),
        "context": f.ref("Encounter", f.VISIT, e.visit_id),
        "requestingOrganization": f.organization(e.billing_institution),
        "enteredDate": f.instant(e.reversed_at),
        "priceOverride": f.money(e.amount),
    }]


MAPPINGS: dict[type[StrictModel], Callable[[Any], list[dict[str, Any]]]] = {
    v1.LabOrderAccepted: _accepted,
    v1.DuplicateTestAvoided: _avoided,
    v1.LabTestsCancelled: _cancelled,
    v1.SpecimenCollectionRecorded: _collected,
    v1.SpecimenReceived: _received,
    v1.SpecimenRejected: _rejected,
    v1.SpecimenInTransit: _in_transit,
    v1.SpecimenInTransitOverdue: _overdue,
    v1.RecollectionRequested: _recollect,
    v1.LabResultsReported: _reported,
    v1.LabReportVerified: _verified,
    v1.LabReportAmended: _amended,
    v1.CriticalValueRaised: _critical_raised,
    v1.CriticalValueCallBackRecorded: _call_back,
    v1.CriticalValueAcknowledged: _acknowledged,
    v1.CriticalValueEscalated: _escalated,
    v1.RecognisedResultAmended: _recognised_amended,
    v1.ChargesPosted: _charge,
    v1.ChargesReversed: _charge_reversed,
}


# --- an order as it stands (GET /orders/{id}/fhir) --------------------------------

# Test status (domain.TestStatus) → ServiceRequest.status.
REQUEST_STATUS = {TestStatus.VERIFIED: "completed", TestStatus.CANCELLED: "revoked",
                  TestStatus.AVOIDED: "revoked"}
# Specimen state (domain.SpecimenState) → Specimen.status.
SPECIMEN_STATUS = {SpecimenState.REJECTED: "unsatisfactory",
                   SpecimenState.CANCELLED: "unavailable"}


def order_bundle(order: Mapping[str, Any],
                 observations: list[tuple[Observation, Mapping[str, Any]]],
                 report_id: str, revisions: list[Mapping[str, Any]],
                 recognised: Mapping[str, Any]) -> dict[str, Any]:
    """The order as it stands, as a Bundle: a ServiceRequest per test, a Specimen
    per tube, the DiagnosticReport at its latest revision and the Observations it
    reports now (superseded ones are left out: the amended report lists their
    replacements). `order` is store.order_view's (tests and specimens with it),
    `observations` pair each
    current result with its row (status, report_revision, supersedes),
    `revisions` are report `report_id`'s (revision, by_staff, at), `recognised` maps an
    observation id to its recognition's valid_until."""
    patient_ref = order["patient_ref"]
    tests_of = {s["barcode"]: [t["test_code"] for t in order["tests"]
                               if t["barcode"] == s["barcode"]] for s in order["specimens"]}
    collected = {s["barcode"]: s["collected_at"] for s in order["specimens"]}
    requests = [_service_request(
        order["order_id"], t["test_code"], status=REQUEST_STATUS.get(t["status"], "active"),
        subject=f.patient(patient_ref), priority=order["priority"],
        encounter=f.ref("Encounter", f.VISIT, order["visit_id"]),
        authoredOn=order["ordered_at"], requester=f.organization(order["ordering_institution"]),
        performer=[f.organization(order["lab_centre"])]) for t in order["tests"]]
    tubes = [_specimen(s["barcode"], status=SPECIMEN_STATUS.get(s["state"], "available"),
                       patient_ref=patient_ref, tube=TubeType(s["tube"]),
                       tests=tests_of[s["barcode"]],
                       request=[order_test(order["order_id"], code)
                                for code in tests_of[s["barcode"]]],
                       collection={"collectedDateTime": _time(s["collected_at"])})
             for s in order["specimens"]]
    results = [observation(
        obs, status="amended" if row["supersedes"] else "final", patient_ref=patient_ref,
        barcode=row["barcode"], performer=order["lab_centre"],
        effective=collected.get(row["barcode"]), analysed=row.get("run_at"),
        issued=row.get("verified_at"),
        recognition=Recognition(observation_id=obs.observation_id, code=obs.code,
                                valid_until=recognised[obs.observation_id])
        if obs.observation_id in recognised else None)
        for obs, row in observations]
    live = [t for t in order["tests"]
            if t["status"] not in (TestStatus.CANCELLED, TestStatus.AVOIDED)]
    report = _report(order["order_id"], patient_ref, order["lab_centre"],
                     [obs.observation_id for obs, _ in observations])
    report["basedOn"] = [order_test(order["order_id"], t["test_code"]) for t in live]
    # The tubes the report rests on: those of its results, else (nothing
    # verified yet) those still in play.
    based_on = list(dict.fromkeys(row["barcode"] for _, row in observations)) or [
        s["barcode"] for s in order["specimens"]
        if s["state"] not in (SpecimenState.REJECTED, SpecimenState.CANCELLED)]
    if based_on:
        report["specimen"] = [specimen_ref(b) for b in based_on]
        report.update(_effective(sorted({_time(collected[b]) for b in based_on})))
    if not revisions:
        report["status"] = "registered"  # nothing verified yet
    else:
        latest = revisions[-1]
        report["identifier"].insert(0, f.identifier(
            REPORT, f"{report_id}/{latest['revision']}"))
        done = all(t["status"] == TestStatus.VERIFIED for t in live)
        report["status"] = ("amended" if latest["revision"] > 1
                            else "final" if done else "partial")
        report["issued"] = latest["at"]
        report["resultsInterpreter"] = [f.practitioner(latest["by_staff"])]
    bundle = f.bundle([*requests, *tubes, report, *results])
    bundle["identifier"] = f.identifier(ORDER, order["order_id"])
    return bundle


def _effective(times: list[str]) -> dict[str, Any]:
    """effective[x] of a report over tubes collected at `times` (sorted FHIR dateTimes
    in UTC, so text order is time order)."""
    if len(times) == 1:
        return {"effectiveDateTime": times[0]}
    return {"effectivePeriod": {"start": times[0], "end": times[-1]}}


def resources(event: StrictModel) -> list[dict[str, Any]]:
    """The FHIR resources `event` stands for; [] for an event in UNMAPPED."""
    mapping = MAPPINGS.get(type(event))
    if mapping is None:
        if type(event) in UNMAPPED:
            return []
        raise TypeError(f"no FHIR mapping for {type(event).__name__}")
    return mapping(event)

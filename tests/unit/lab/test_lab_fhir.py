"""The lab's FHIR R4 mappings (DESIGN §4): every published event has one (or a
stated reason why not), and what it gives validates with FHIR.js."""

from __future__ import annotations

import itertools
import re
from decimal import Decimal

import pytest
from fhir_check import problems
from yigongti_contracts import fhir as f
from yigongti_contracts.examples import EXAMPLES, PATIENT
from yigongti_contracts.lab import v1
from yigongti_contracts.lab.codes import (
    CallBackOutcome,
    Comparator,
    Flag,
    RejectionReason,
    ReversalReason,
)
from yigongti_contracts.lab.parts import Observation
from yigongti_lab import fhir


def _only(event) -> dict:
    (resource,) = fhir.resources(event)
    return resource


def test_every_published_event_is_mapped_or_says_why_not():
    for model in v1.EVENTS:
        assert (model in fhir.MAPPINGS) != (model in fhir.UNMAPPED), model.__name__
    assert all(reason for reason in fhir.UNMAPPED.values())


def test_an_intake_record_has_no_mapping_of_its_own():
    with pytest.raises(TypeError, match="LabOrderPlaced"):
        fhir.resources(EXAMPLES[v1.LabOrderPlaced])


def test_every_example_event_maps_to_valid_fhir_r4():
    mapped = {model: fhir.resources(EXAMPLES[model]) for model in v1.EVENTS}
    resources = [r for rs in mapped.values() for r in rs]
    assert all(mapped[m] for m in fhir.MAPPINGS)
    assert {r["resourceType"] for r in resources} == {
        "ServiceRequest", "Specimen", "Task", "Observation", "DiagnosticReport",
        "Communication", "ChargeItem"}
    errors = problems(resources)
    assert [(r["resourceType"], e) for r, e in zip(resources, errors, strict=True) if e] == []


def test_the_validator_catches_what_is_wrong():
    # The checks above could fail: a resource without its required status, with
    # a status outside the value set, or with a field R4 does not have.
    report = fhir.resources(EXAMPLES[v1.LabReportVerified])[0]
    no_status = {k: v for k, v in report.items() if k != "status"}
    bad_status = {**report, "status": "done"}
    unknown = {**report, "conclusionText": "x"}
    found = problems([no_status, bad_status, unknown])
    assert any("status" in e and "Missing" in e for e in found[0])
    assert any("not found in value set" in e for e in found[1])
    assert any("Unexpected property" in e for e in found[2])


def test_the_bundle_of_a_report_validates():
    bundle = f.bundle(fhir.resources(EXAMPLES[v1.LabReportVerified]))
    assert problems([bundle]) == [[]]


def test_accepted_order_is_one_service_request_per_test_naming_loinc_and_our_code():
    event = EXAMPLES[v1.LabOrderAccepted]
    requests = fhir.resources(event)
    assert [r["identifier"][0]["value"] for r in requests] == [
        f"{event.order_id}/{code}" for code in event.tests]
    potassium = requests[1]
    assert potassium["status"] == "active" and potassium["priority"] == "stat"
    assert potassium["code"]["coding"][0] == {"system": f.LOINC, "code": "2823-3"}
    assert potassium["code"]["coding"][1]["system"] == fhir.TEST_CODES
    assert potassium["subject"]["identifier"] == {"system": f.PATIENT_REF, "value": PATIENT}
    # A catalogue code ("CBC") is coded with the catalogue's LOINC panel code.
    assert requests[2]["code"]["coding"][0] == {"system": f.LOINC, "code": "58410-2"}
    assert requests[2]["code"]["coding"][1]["display"] == "血常规"
    # A code neither in the catalogue nor shaped like LOINC is ours only.
    assert fhir.test_concept("XYZ") == {"coding": [{"system": fhir.TEST_CODES, "code": "XYZ"}]}


def test_an_avoided_duplicate_is_revoked_and_cites_the_recognised_result():
    event = EXAMPLES[v1.DuplicateTestAvoided]
    request = _only(event)
    assert request["status"] == "revoked"
    assert request["supportingInfo"] == [fhir.observation_ref(event.recognised.observation_id)]


def test_cancelled_tests_are_revoked_requests_of_the_patient():
    requests = fhir.resources(EXAMPLES[v1.LabTestsCancelled])
    assert [(r["status"], r["subject"]["identifier"]["value"]) for r in requests] == [
        ("revoked", PATIENT)]
    older = EXAMPLES[v1.LabTestsCancelled].model_copy(update={"patient_ref": None})
    assert problems(fhir.resources(older)) == [[]]


def test_a_rejected_specimen_is_unsatisfactory_with_hl7_conditions_where_they_exist():
    event = EXAMPLES[v1.SpecimenRejected].model_copy(update={"reasons": (
        RejectionReason.clotted, RejectionReason.haemolysed, RejectionReason.wrong_tube)})
    specimen = _only(event)
    assert specimen["status"] == "unsatisfactory"
    first = [c["coding"][0] for c in specimen["condition"]]
    assert [(c["system"], c["code"]) for c in first] == [
        (f.V2_0493, "CLOT"), (f.V2_0493, "HEM"), (fhir.REJECTION, "wrong_tube")]


def test_a_collected_specimen_names_its_type_tube_requests_and_recollection():
    event = EXAMPLES[v1.SpecimenCollectionRecorded].model_copy(
        update={"recollection_of": "T250115000100"})
    specimen = _only(event)
    assert specimen["type"]["coding"][0]["code"] == "SER"
    assert specimen["container"][0]["type"]["coding"][0]["code"] == "serum_gold"
    assert len(specimen["request"]) == len(event.tests)
    assert specimen["extension"][0]["valueIdentifier"]["value"] == "T250115000100"
    assert problems([specimen]) == [[]]


def test_a_critical_result_is_interpreted_critical_and_its_alert_is_about_it():
    reported = fhir.resources(EXAMPLES[v1.LabResultsReported])
    troponin, potassium = reported
    assert troponin["interpretation"][0]["coding"][0]["code"] == "HH"
    assert potassium["interpretation"][0]["coding"][0]["code"] == "N"
    assert troponin["status"] == "preliminary"
    assert troponin["valueQuantity"] == {"value": Decimal("2.35"), "unit": "ng/mL", "system": f.UCUM,
                                         "code": "ng/mL"}
    assert potassium["referenceRange"] == [{"low": f.quantity(Decimal("3.5"), "mmol/L"),
                                            "high": f.quantity(Decimal("5.3"), "mmol/L")}]
    alert = _only(EXAMPLES[v1.CriticalValueRaised])
    assert alert["about"] == [fhir.observation_ref("OBS-1")]
    assert alert["category"][0]["coding"][0]["code"] == "alert"
    assert alert["priority"] == "stat"


def test_call_backs_acknowledgement_and_escalation_answer_the_alert():
    alert = fhir.critical_alert_ref("CRIT-0001")
    reached = _only(EXAMPLES[v1.CriticalValueCallBackRecorded])
    missed = _only(EXAMPLES[v1.CriticalValueCallBackRecorded].model_copy(
        update={"outcome": CallBackOutcome.unable_to_reach, "reached": None}))
    ack = _only(EXAMPLES[v1.CriticalValueAcknowledged])
    escalated = _only(EXAMPLES[v1.CriticalValueEscalated])
    assert [r["inResponseTo"] for r in (reached, missed, ack, escalated)] == [[alert]] * 4
    assert (reached["status"], missed["status"]) == ("completed", "not-done")
    assert "recipient" not in missed
    assert escalated["recipient"] == [f.practitioner("STAFF-0108")]
    assert problems([missed]) == [[]]


def test_a_verified_report_is_final_and_an_amendment_is_amended_with_recognition():
    verified = fhir.resources(EXAMPLES[v1.LabReportVerified])
    amended = fhir.resources(EXAMPLES[v1.LabReportAmended])
    assert [r["status"] for r in verified] == ["final"] * 3
    assert [r["status"] for r in amended] == ["amended"] * 3
    assert verified[0]["identifier"][0]["value"].endswith("/1")
    assert amended[0]["identifier"][0]["value"].endswith("/2")
    assert amended[0]["result"] == [fhir.observation_ref("OBS-1"), fhir.observation_ref("OBS-3")]
    recognised = [r for r in verified[1:] if "extension" in r]
    assert [r["identifier"][0]["value"] for r in recognised] == ["OBS-2"]
    assert recognised[0]["extension"][0]["url"] == f.extension_url("recognised-until")


def test_charges_are_billable_then_aborted_or_entered_in_error():
    posted = _only(EXAMPLES[v1.ChargesPosted])
    assert posted["status"] == "billable"
    assert posted["priceOverride"]["currency"] == "CNY"
    reversed_ = EXAMPLES[v1.ChargesReversed]
    assert _only(reversed_)["status"] == "aborted"
    in_error = reversed_.model_copy(update={"reason": ReversalReason.posted_in_error})
    assert _only(in_error)["status"] == "entered-in-error"


def test_no_resource_carries_more_than_the_pseudonymous_patient_ref():
    text = f.dumps([r for m in fhir.MAPPINGS for r in fhir.resources(EXAMPLES[m])])
    assert not re.search(r"\d{17}[\dXx]", text)  # no national ID number
    assert '"name"' not in text and "birthDate" not in text


def test_every_kind_of_observation_maps_to_a_valid_observation():
    # Numeric (each comparator, a range or none) and coded, each flag, critical
    # or not, delta check failed or not: validated in one run of the validator.
    values = [{"value": Decimal("4.125"), "unit": "mmol/L", "comparator": c}
              for c in (None, *Comparator)] + [{"value": Decimal("-3"), "unit": "mmol/L"},
                                               {"coded_value": "POS"}]
    observations = [
        Observation(observation_id="OBS-7", code="2823-3", flag=flag, critical=critical,
                    delta_check_failed=critical, reference_low=Decimal("3.5")
                    if "value" in value else None, **value)
        for value, flag, critical in itertools.product(values, Flag, (False, True))]
    resources = [fhir.observation(o, status="final", patient_ref=PATIENT) for o in observations]
    assert all(p == [] for p in problems(resources))
    assert [("valueQuantity" in r) for r in resources] == [o.value is not None
                                                          for o in observations]

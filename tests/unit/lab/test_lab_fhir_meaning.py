"""What the lab's FHIR resources mean, beyond being valid R4 (issue 8, item 18):
when a result was measured and released, whose it is, which specimen, decimals
with their reported precision, references that resolve inside a Bundle."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fhir_check import problems
from yigongti_contracts import fhir as f
from yigongti_contracts.common import IntakeRejected
from yigongti_contracts.examples import EXAMPLES, PATIENT
from yigongti_contracts.lab import v1
from yigongti_contracts.lab.codes import Flag, TubeType
from yigongti_contracts.lab.parts import Observation
from yigongti_lab import fhir

T0 = datetime(2025, 1, 15, 2, 0, tzinfo=UTC)
ANALYSIS_TIME = "http://hl7.org/fhir/StructureDefinition/observation-analysis-date-time"


def _with(event, **fields):
    """The example event with fields it did not carry before, validated."""
    return type(event).model_validate({**event.model_dump(), **fields})


def test_a_preliminary_observation_names_its_patient_collection_analysis_and_release_times():
    event = _with(EXAMPLES[v1.LabResultsReported], patient_ref=PATIENT,
                  collected_at=T0 + timedelta(minutes=5))
    troponin, _ = fhir.resources(event)
    assert troponin["subject"] == f.patient(PATIENT)
    # effective[x]: the physiologically relevant time, the specimen's collection
    assert troponin["effectiveDateTime"] == f.instant(event.collected_at)
    assert troponin["issued"] == f.instant(event.reported_at)
    assert {"url": ANALYSIS_TIME, "valueDateTime": f.instant(event.run_at)} in \
        troponin["extension"]
    assert problems([troponin]) == [[]]


def test_event_built_specimens_name_their_patient():
    for model in (v1.SpecimenCollectionRecorded, v1.SpecimenReceived, v1.SpecimenRejected):
        (specimen,) = fhir.resources(_with(EXAMPLES[model], patient_ref=PATIENT))
        assert specimen["subject"] == f.patient(PATIENT), model.__name__
        assert problems([specimen]) == [[]]


def test_a_blood_gas_specimen_is_arterial_blood():
    event = EXAMPLES[v1.SpecimenCollectionRecorded].model_copy(
        update={"tests": ("BG",), "tube": TubeType.lithium_heparin})
    (specimen,) = fhir.resources(event)
    assert specimen["type"]["coding"][0] == {"system": f.V2_0487, "code": "BLDA",
                                             "display": "Blood arterial"}
    ammonia = event.model_copy(update={"tests": ("NH3",)})
    assert fhir.resources(ammonia)[0]["type"]["coding"][0]["code"] == "PLAS"


def test_intake_rejected_has_no_mapping_and_says_so():
    assert IntakeRejected in fhir.UNMAPPED and fhir.UNMAPPED[IntakeRejected]
    rejected = IntakeRejected(key="K-1", service="lab", reason="schema_violation",
                              rejected_at=T0)
    assert fhir.resources(rejected) == []


def test_decimals_keep_their_reported_precision_in_the_json():
    obs = Observation(observation_id="OBS-9", code="K", value=Decimal("6.10"), unit="mmol/L",
                      reference_low=Decimal("3.50"), flag=Flag.H)
    resource = fhir.observation(obs, status="final", patient_ref=PATIENT)
    text = f.dumps(resource)
    assert '"value":6.10' in text and '"value":3.50' in text
    assert json.loads(text)["valueQuantity"]["value"] == 6.1  # still a JSON number
    assert f.dumps({"x": Decimal("1E+2"), "y": "二", "z": [True, None]}) == \
        '{"x":1E+2,"y":"二","z":[true,null]}'


# --- the order as it stands (GET /orders/{id}/fhir) ----------------------------------

COLLECTED = T0 + timedelta(minutes=5)
RUN = T0 + timedelta(minutes=60)
VERIFIED = T0 + timedelta(minutes=90)


def _order_bundle() -> dict:
    order = {
        "order_id": "O-1", "visit_id": "V-1", "patient_ref": PATIENT,
        "ordering_institution": "652325-B01", "lab_centre": "652325-L01",
        "priority": "stat", "ordered_at": f.instant(T0),
        "tests": [{"test_code": "K", "status": "verified", "barcode": "B-0001"},
                  {"test_code": "CTNI", "status": "verified", "barcode": "B-0001"}],
        "specimens": [{"barcode": "B-0001", "tube": "serum_gold", "state": "verified",
                       "processing_state": "centrifuged", "collected_at": COLLECTED.isoformat()}],
    }
    observations = [
        (Observation(observation_id=f"B-0001.{code}.1", code=code, value=Decimal(value),
                     unit=unit, flag=Flag.N),
         {"barcode": "B-0001", "supersedes": None, "verified_at": VERIFIED.isoformat(),
          "run_at": RUN.isoformat()})
        for code, value, unit in (("K", "4.10", "mmol/L"), ("CTNI", "5", "ng/L"))]
    revisions = [{"revision": 1, "by_staff": "phys-2", "at": VERIFIED.isoformat()}]
    return fhir.order_bundle(order, observations, "R-O-1", revisions, {})


def _of(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_the_order_bundle_says_when_results_were_collected_measured_and_released():
    bundle = _order_bundle()
    observations = _of(bundle, "Observation")
    for obs in observations:
        assert obs["effectiveDateTime"] == f.instant(COLLECTED)
        assert obs["issued"] == f.instant(VERIFIED)
        assert {"url": ANALYSIS_TIME, "valueDateTime": f.instant(RUN)} in obs["extension"]
    (report,) = _of(bundle, "DiagnosticReport")
    assert report["effectiveDateTime"] == f.instant(COLLECTED)
    assert [s["identifier"]["value"] for s in report["specimen"]] == ["B-0001"]
    assert problems([bundle]) == [[]]


def test_every_bundle_entry_has_a_full_url_and_references_inside_the_bundle_resolve():
    bundle = _order_bundle()
    urls = [e.get("fullUrl") for e in bundle["entry"]]
    assert all(u and u.startswith("urn:uuid:") for u in urls) and len(set(urls)) == len(urls)
    by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}

    def references(node):
        if isinstance(node, dict):
            if "identifier" in node and "type" in node and isinstance(node["identifier"], dict):
                yield node
            for value in node.values():
                yield from references(value)
        elif isinstance(node, list):
            for value in node:
                yield from references(value)

    inside = 0
    for entry in bundle["entry"]:
        for ref in references(entry["resource"]):
            target = [r for r in by_url.values() if r["resourceType"] == ref["type"]
                      and ref["identifier"] in r.get("identifier", [])]
            if target:
                inside += 1
                assert by_url[ref["reference"]] is target[0]
            else:
                assert "reference" not in ref  # Patient, Organization…: not in the Bundle
    # each Observation's specimen, the report's results and specimen, the
    # Specimen's requests
    assert inside >= 2 + 2 + 1 + 2
    # the same order gives the same fullUrls (stable across reads)
    assert [e["fullUrl"] for e in _order_bundle()["entry"]] == urls

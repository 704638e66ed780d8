"""The diagnosis service's FHIR R4 mappings (fhir.py) validate with FHIR.js in
every state a request can be in, for ECG and imaging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fhir_check import problems
from yigongti_diagnosis import fhir

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def _request(status: str, modality: str = "ECG") -> dict:
    imaging = modality != "ECG"
    return {
        "request_id": "DXR-1", "visit_id": "VIS-1", "patient_ref": "v1:" + "ab" * 32,
        "modality": modality, "status": status, "priority": "stat",
        "indications": ["R07.4"], "requested_at": T0, "queued_at": T0,
        "due_at": T0 + timedelta(minutes=10), "requesting_institution": "652325-B01",
        "requesting_clinician": "STAFF-0107", "reading_centre": "652325-E01",
        "claimed_by": "STAFF-2001" if status == "claimed" else None,
        "study_instance_uid": "1.2.826.0.1.3680043.8.498.1" if imaging else None,
        "accession_number": "ACC1" if imaging else None,
        "study": {"modalities": [modality], "instance_count": 2, "series": [
            {"series_uid": "1.2.826.0.1.3680043.8.498.2", "modality": modality,
             "instance_count": 2, "number": 1}]} if imaging else None,
    }


MEASUREMENTS = {"heart_rate_bpm": 61.1, "qrs_ms": 75.0, "qt_ms": 356.3, "qtc_ms": 358.3,
                "longest_pause_s": 1.0, "rr_cv_percent": 1.5, "library": "neurokit2 0.3.0",
                "qtc_formula": "Fridericia"}
REVISIONS = [
    {"report_id": "RPT-1", "revision": 1, "impression": "Anterior STEMI.",
     "conclusions": ["I21.0"], "reader": "STAFF-2001", "signed_at": T0 + timedelta(minutes=6)},
    {"report_id": "RPT-1", "revision": 2, "impression": "Anterior STEMI, AV block.",
     "conclusions": ["I21.0", "I44.2"], "reader": "STAFF-2001",
     "signed_at": T0 + timedelta(minutes=30)},
]
FINDING = {"finding_id": "CF-1", "conclusion": "I21.0", "raised_at": T0 + timedelta(minutes=6),
           "acknowledged_at": T0 + timedelta(minutes=9)}


def _resources(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle["entry"]]


@pytest.mark.parametrize("status", ["queued", "claimed", "withdrawn"])
@pytest.mark.parametrize("modality", ["ECG", "CT"])
def test_an_unreported_request_validates(status, modality):
    bundle = fhir.request_bundle(_request(status, modality),
                                 MEASUREMENTS if modality == "ECG" else None, [], None)
    resources = _resources(bundle)
    task = next(r for r in resources if r["resourceType"] == "Task")
    assert task["status"] == fhir.TASK_STATUS[status]
    assert problems([bundle, *resources]) == [[]] * (1 + len(resources))


def test_a_reported_critical_ecg_validates_with_its_aa_observation_and_communication():
    bundle = fhir.request_bundle(_request("reported"), MEASUREMENTS, REVISIONS, FINDING)
    resources = _resources(bundle)
    kinds = [r["resourceType"] for r in resources]
    assert kinds.count("DiagnosticReport") == 2 and "Communication" in kinds
    report = next(r for r in resources if r["resourceType"] == "DiagnosticReport")
    assert "interpretation" not in report  # R4 has none: the AA Observation is in result
    critical = next(r for r in resources if r.get("interpretation"))
    assert {"type": "Observation", "identifier": critical["identifier"][0],
            "reference": next(e["fullUrl"] for e in bundle["entry"]
                              if e["resource"] is critical)} in report["result"]
    units = {r["valueQuantity"]["code"] for r in resources if "valueQuantity" in r}
    assert units == {"/min", "ms", "s", "%"}
    assert problems([bundle, *resources]) == [[]] * (1 + len(resources))


def test_service_conclusion_codes_are_not_called_icd10():
    assert fhir.conclusion_coding("I21.0")["system"] == fhir.ICD10
    assert fhir.conclusion_coding("ECG.NORMAL")["system"] == fhir.CONCLUSION

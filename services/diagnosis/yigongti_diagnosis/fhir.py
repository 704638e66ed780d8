"""A diagnosis request as HL7 FHIR R4 (4.0.1) resources (DESIGN §4), from the
service's rows: `request_bundle(...)` is what GET /requests/{id}/fhir answers.

| what                       | resource                                         |
|----------------------------|--------------------------------------------------|
| the request                | ServiceRequest (LOINC code of the study)         |
| an imaging study on PACS   | ImagingStudy (series, modality, instance counts) |
| each ECG measurement       | Observation (LOINC, UCUM)                        |
| the worklist item          | Task (ready / in-progress / completed / cancelled)|
| the report, each revision  | DiagnosticReport final / amended, conclusionCode |
| a critical finding         | Observation of the conclusion, interpretation AA,|
|                            | in DiagnosticReport.result (R4 has no            |
|                            | DiagnosticReport.interpretation)                 |
| its notification           | Communication (alert) about the DiagnosticReport |

Pure. Tests validate every mapping with FHIR.js (tests/fhir_check.py).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from yigongti_contracts import fhir as f

REQUEST = f.sid("diagnosis-request")
REPORT = f.sid("diagnosis-report")  # "<report_id>/<revision>"
MEASUREMENT = f.sid("ecg-measurement")  # "<request_id>/<measurement>"
FINDING = f.sid("critical-finding")
TASK = f.sid("diagnosis-task")
STUDY_UID = "urn:dicom:uid"
ACCESSION = f.sid("accession-number")  # the county PACS's accession numbers
ICD10 = "http://hl7.org/fhir/sid/icd-10"
CONCLUSION = f.code_system("diagnosis-conclusion")  # the service's own (ECG.NORMAL…)
ECG_MEASURE = f.code_system("ecg-measurement")  # figures LOINC has no code for
DICOM_MODALITY = "http://dicom.nema.org/resources/ontology/DCM"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
REPORT_CATEGORY = "http://terminology.hl7.org/CodeSystem/v2-0074"

# The study ordered, by modality (LOINC).
STUDY_CODE = {
    "ECG": ("11524-6", "EKG study"),
    "DX": ("36643-5", "XR Chest 2 Views"),  # the reference scenario's chest film
    "CT": ("24627-2", "CT Chest"),
    "MR": ("24590-2", "MR Brain"),
    "US": ("24558-9", "US Abdomen"),
}
# measurement field -> (system, code, display, UCUM unit)
MEASUREMENTS = {
    "heart_rate_bpm": (f.LOINC, "8867-4", "Heart rate", "/min"),
    "qrs_ms": (f.LOINC, "8633-2", "QRS duration", "ms"),
    "qt_ms": (f.LOINC, "8634-8", "Q-T interval", "ms"),
    "qtc_ms": (f.LOINC, "8636-5", "Q-T interval corrected (Fridericia)", "ms"),
    "longest_pause_s": (ECG_MEASURE, "longest_pause", "Longest RR interval or pause", "s"),
    "rr_cv_percent": (ECG_MEASURE, "rr_cv", "RR interval coefficient of variation", "%"),
}
TASK_STATUS = {"queued": "ready", "claimed": "in-progress", "reported": "completed",
               "withdrawn": "cancelled"}


def _t(value: datetime | str) -> str:
    return f.instant(value if isinstance(value, datetime) else datetime.fromisoformat(value))


def conclusion_coding(code: str) -> dict[str, str]:
    """ICD-10 where the code is one ("I21.0"), else the service's list ("ECG.NORMAL")."""
    return f.coding(ICD10 if code[1:3].isdigit() else CONCLUSION, code)


def service_request(r: dict) -> dict[str, Any]:
    code, display = STUDY_CODE[r["modality"]]
    out = {
        "resourceType": "ServiceRequest",
        "identifier": [f.identifier(REQUEST, r["request_id"])],
        "status": {"withdrawn": "revoked", "reported": "completed"}.get(r["status"], "active"),
        "intent": "order",
        "priority": r["priority"],
        "code": f.concept(f.coding(f.LOINC, code, display)),
        "subject": f.patient(r["patient_ref"]),
        "encounter": f.ref("Encounter", f.VISIT, r["visit_id"]),
        "authoredOn": _t(r["requested_at"]),
        "requester": f.practitioner(r["requesting_clinician"]),
        "performer": [f.organization(r["reading_centre"])],
        "reasonCode": [f.concept(f.coding(ICD10, c)) for c in r["indications"]],
    }
    if r.get("study_instance_uid"):
        out["supportingInfo"] = [f.ref("ImagingStudy", STUDY_UID,
                                       "urn:oid:" + r["study_instance_uid"])]
    return out


def imaging_study(r: dict) -> dict[str, Any]:
    study = r["study"] or {}
    return {
        "resourceType": "ImagingStudy",
        "identifier": [f.identifier(STUDY_UID, "urn:oid:" + r["study_instance_uid"]),
                       {"type": f.concept(f.coding(
                           "http://terminology.hl7.org/CodeSystem/v2-0203", "ACSN")),
                        "system": ACCESSION, "value": r["accession_number"]}],
        "status": "available",
        "modality": [f.coding(DICOM_MODALITY, m) for m in study.get("modalities", [])],
        "subject": f.patient(r["patient_ref"]),
        "basedOn": [f.ref("ServiceRequest", REQUEST, r["request_id"])],
        "numberOfSeries": len(study.get("series", [])),
        "numberOfInstances": study.get("instance_count", 0),
        "series": [{"uid": s["series_uid"], **({"number": s["number"]} if s.get("number")
                                                 is not None else {}),
                    "modality": f.coding(DICOM_MODALITY, s["modality"] or r["modality"]),
                    "numberOfInstances": s["instance_count"]}
                   for s in study.get("series", [])],
    }


def measurement_observations(r: dict, measurements: dict, at: datetime | str
                             ) -> list[dict[str, Any]]:
    out = []
    for name, (system, code, display, unit) in MEASUREMENTS.items():
        value = measurements.get(name)
        if value is None:
            continue
        out.append({
            "resourceType": "Observation",
            "identifier": [f.identifier(MEASUREMENT, f"{r['request_id']}/{name}")],
            "status": "preliminary",  # automatic: the reader's report is what is final
            "category": [f.concept(f.coding(OBS_CATEGORY, "procedure"))],
            "code": f.concept(f.coding(system, code, display)),
            "subject": f.patient(r["patient_ref"]),
            "basedOn": [f.ref("ServiceRequest", REQUEST, r["request_id"])],
            "effectiveDateTime": _t(at),
            "method": {"text": f"neurokit2 ({measurements.get('library', '')}); QTc "
                               f"{measurements.get('qtc_formula', 'Fridericia')}"},
            "valueQuantity": f.quantity(Decimal(str(value)), unit),
        })
    return out


def task(r: dict) -> dict[str, Any]:
    out = {
        "resourceType": "Task",
        "identifier": [f.identifier(TASK, r["request_id"])],
        "status": TASK_STATUS[r["status"]],
        "intent": "order",
        "priority": r["priority"],
        "code": f.concept(f.coding("http://hl7.org/fhir/CodeSystem/task-code", "fulfill")),
        "focus": f.ref("ServiceRequest", REQUEST, r["request_id"]),
        "for": f.patient(r["patient_ref"]),
        "authoredOn": _t(r["queued_at"]),
        "requester": f.organization(r["requesting_institution"]),
        "restriction": {"period": {"end": _t(r["due_at"])}},
    }
    if r.get("claimed_by"):
        out["owner"] = f.practitioner(r["claimed_by"])
    else:
        out["owner"] = f.organization(r["reading_centre"])
    return out


def critical_observation(r: dict, finding: dict) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "identifier": [f.identifier(FINDING, finding["finding_id"])],
        "status": "final",
        "category": [f.concept(f.coding(OBS_CATEGORY, "exam"))],
        "code": f.concept(conclusion_coding(finding["conclusion"])),
        "subject": f.patient(r["patient_ref"]),
        "effectiveDateTime": _t(finding["raised_at"]),
        "valueCodeableConcept": f.concept(conclusion_coding(finding["conclusion"])),
        "interpretation": [f.concept(f.coding(INTERPRETATION, "AA", "Critical abnormal"))],
    }


def diagnostic_report(r: dict, rev: dict, results: list[dict]) -> dict[str, Any]:
    ecg = r["modality"] == "ECG"
    code, display = STUDY_CODE[r["modality"]]
    return {
        "resourceType": "DiagnosticReport",
        "identifier": [f.identifier(REPORT, f"{rev['report_id']}/{rev['revision']}")],
        "basedOn": [f.ref("ServiceRequest", REQUEST, r["request_id"])],
        # Every revision is kept: the original final, each later one amended.
        "status": "final" if rev["revision"] == 1 else "amended",
        "category": [f.concept(f.coding(REPORT_CATEGORY, "EC" if ecg else "RAD"))],
        "code": f.concept(f.coding(f.LOINC, code, display)),
        "subject": f.patient(r["patient_ref"]),
        "issued": _t(rev["signed_at"]),
        "performer": [f.organization(r["reading_centre"])],
        "resultsInterpreter": [f.practitioner(rev["reader"])],
        "result": [f.ref("Observation", o["identifier"][0]["system"],
                         o["identifier"][0]["value"]) for o in results],
        **({"imagingStudy": [f.ref("ImagingStudy", STUDY_UID,
                                   "urn:oid:" + r["study_instance_uid"])]}
           if r.get("study_instance_uid") else {}),
        "conclusion": rev["impression"],
        "conclusionCode": [f.concept(conclusion_coding(c)) for c in rev["conclusions"]],
    }


def communication(r: dict, finding: dict, report_ident: str) -> dict[str, Any]:
    out = {
        "resourceType": "Communication",
        "identifier": [f.identifier(FINDING, finding["finding_id"])],
        "status": "completed" if finding.get("acknowledged_at") else "in-progress",
        "category": [f.concept(f.coding(f.COMMUNICATION_CATEGORY, "alert"))],
        "priority": "stat",
        "subject": f.patient(r["patient_ref"]),
        "about": [f.ref("DiagnosticReport", REPORT, report_ident)],
        "sent": _t(finding["raised_at"]),
        "recipient": [f.organization(r["requesting_institution"])],
        "sender": f.organization(r["reading_centre"]),
        "payload": [{"contentString": "Critical finding " + finding["conclusion"]}],
    }
    if finding.get("acknowledged_at"):
        out["received"] = _t(finding["acknowledged_at"])
    return out


def request_bundle(r: dict, measurements: dict | None, revisions: list[dict],
                   finding: dict | None) -> dict[str, Any]:
    resources = [service_request(r), task(r)]
    if r.get("study_instance_uid") and r.get("study"):
        resources.append(imaging_study(r))
    observations = measurement_observations(r, measurements, r["requested_at"]) \
        if measurements else []
    resources += observations
    results = list(observations)
    if finding is not None:
        critical = critical_observation(r, finding)
        resources.append(critical)
        results.append(critical)
    for rev in revisions:
        resources.append(diagnostic_report(r, rev, results))
    if finding is not None and revisions:
        resources.append(communication(r, finding,
                                       f"{revisions[0]['report_id']}/{revisions[0]['revision']}"))
    return f.bundle(resources)

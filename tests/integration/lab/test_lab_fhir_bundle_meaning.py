"""GET /orders/{id}/fhir says when each result was collected, measured and
released, which tubes the report rests on, keeps the reported precision of
every decimal, and its references resolve inside the Bundle; the events the
Observations and Specimens are built from name the patient (issue 8, item 18)."""

from __future__ import annotations

from datetime import datetime

from fhir_check import problems
from labjourney import clinician, one, verified_order
from yigongti_contracts import fhir as f

ANALYSIS_TIME = "http://hl7.org/fhir/StructureDefinition/observation-analysis-date-time"


def _of(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


async def test_a_verified_order_as_fhir_says_when_and_on_what_each_result_was_measured(
        lab, dev_keys):
    o, t = await verified_order(lab, dev_keys, ("K",), values={"K": "4.10"})
    reported = await one(lab, "results.reported.v1", barcode=t.barcode)
    assert reported["patient_ref"] == o.patient_ref
    collected = datetime.fromisoformat(reported["collected_at"])
    assert collected == t.collected_at
    recorded = await one(lab, "specimen.collection_recorded.v1", barcode=t.barcode)
    assert recorded["patient_ref"] == o.patient_ref

    async with clinician(lab, dev_keys) as clinic:
        answer = await clinic.get(f"/orders/{o.order_id}/fhir")
    assert answer.status_code == 200, answer.text
    assert '"value":4.10' in answer.text  # 4.10 as reported, not 4.1
    bundle = answer.json()
    entries = [e["resource"] for e in bundle["entry"]]
    assert problems([bundle, *entries]) == [[]] * (1 + len(entries))

    (k,) = _of(bundle, "Observation")
    assert datetime.fromisoformat(k["effectiveDateTime"]) == t.collected_at.replace(
        microsecond=t.collected_at.microsecond // 1000 * 1000)
    assert datetime.fromisoformat(k["issued"]) >= datetime.fromisoformat(
        reported["reported_at"])
    assert f.instant(datetime.fromisoformat(reported["run_at"])) == next(
        x["valueDateTime"] for x in k["extension"] if x["url"] == ANALYSIS_TIME)
    (report,) = _of(bundle, "DiagnosticReport")
    assert report["effectiveDateTime"] == k["effectiveDateTime"]
    assert [s["identifier"]["value"] for s in report["specimen"]] == [t.barcode]

    by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    assert len(by_url) == len(entries)
    assert by_url[report["result"][0]["reference"]] == k
    assert by_url[report["specimen"][0]["reference"]]["resourceType"] == "Specimen"
    assert by_url[k["specimen"]["reference"]]["accessionIdentifier"]["value"] == t.barcode

"""GET /orders/{id}/fhir on the real broker and database: the order as it stands
as a FHIR R4 Bundle that FHIR.js validates, before and after verification and
after an amendment, scoped as the order is (DESIGN §4)."""

from __future__ import annotations

from decimal import Decimal

from fhir_check import problems
from labflow import order
from labjourney import (
    OTHER_CENTRE,
    OTHER_CLINIC,
    clinician,
    http,
    new_patient,
    obs,
    one,
    ordered_tube,
    physician,
    receive,
    report_results,
    verified_order,
)
from yigongti_contracts import fhir as f
from yigongti_lab import fhir


def _of(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _ids(resources: list[dict]) -> list[str]:
    return [r["identifier"][0]["value"] for r in resources]


async def _bundle(lab, dev_keys, order_id: str) -> dict:
    async with clinician(lab, dev_keys) as clinic:
        answer = await clinic.get(f"/orders/{order_id}/fhir")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/fhir+json")
    bundle = answer.json()
    entries = [e["resource"] for e in bundle["entry"]]
    assert problems([bundle, *entries]) == [[]] * (1 + len(entries))
    return bundle


async def test_a_verified_report_then_its_amendment_as_a_valid_fhir_bundle(lab, dev_keys):
    patient = new_patient()
    o, t = await verified_order(lab, dev_keys, ("K", "CTNI"), patient=patient)
    verified = await one(lab, "report.verified.v1", order_id=o.order_id)
    ids = {x["code"]: x["observation_id"] for x in verified["observations"]}

    bundle = await _bundle(lab, dev_keys, o.order_id)
    assert bundle["type"] == "collection"
    (report,) = _of(bundle, "DiagnosticReport")
    assert report["status"] == "final"
    assert report["resultsInterpreter"] == [f.practitioner("phys-2")]
    assert report["subject"]["identifier"]["value"] == patient
    assert sorted(r["identifier"]["value"] for r in report["result"]) == sorted(ids.values())
    requests = _of(bundle, "ServiceRequest")
    assert sorted(_ids(requests)) == [f"{o.order_id}/CTNI", f"{o.order_id}/K"]
    assert {r["status"] for r in requests} == {"completed"}
    (tube,) = _of(bundle, "Specimen")
    assert tube["accessionIdentifier"]["value"] == t.barcode
    assert tube["type"]["coding"][0]["code"] == "SER" and tube["status"] == "available"
    observations = {r["identifier"][0]["value"]: r for r in _of(bundle, "Observation")}
    k = observations[ids["K"]]
    assert k["status"] == "final"
    assert Decimal(str(k["valueQuantity"]["value"])) == Decimal("4.2")
    assert k["valueQuantity"]["code"] == "mmol/L"
    assert k["specimen"]["identifier"]["value"] == t.barcode
    # K is on the recognition list, troponin is not (both carry their analysis time).
    assert [x["url"] for x in k["extension"]] == [fhir.ANALYSIS_TIME,
                                                  f.extension_url("recognised-until")]
    assert [x["url"] for x in observations[ids["CTNI"]]["extension"]] == [fhir.ANALYSIS_TIME]

    body = {"observation_id": ids["K"], "value": "5.9", "reason": "analytical_error"}
    async with physician(lab, dev_keys, user="phys-3") as doctor:
        answer = await doctor.post(f"/orders/{o.order_id}/amend", json=body)
    assert answer.status_code == 200, answer.text
    replacement = answer.json()["observation_id"]

    bundle = await _bundle(lab, dev_keys, o.order_id)
    (report,) = _of(bundle, "DiagnosticReport")
    assert report["status"] == "amended"
    assert report["identifier"][0]["value"].endswith("/2")
    assert report["resultsInterpreter"] == [f.practitioner("phys-3")]
    observations = {r["identifier"][0]["value"]: r for r in _of(bundle, "Observation")}
    assert set(observations) == {replacement, ids["CTNI"]}  # the superseded K is gone
    assert observations[replacement]["status"] == "amended"
    assert observations[replacement]["interpretation"][0]["coding"][0]["code"] == "H"
    assert observations[ids["CTNI"]]["status"] == "final"


async def test_before_verification_the_report_is_registered_and_a_partial_one_partial(
        lab, dev_keys):
    o, t = await ordered_tube(lab, dev_keys, ("K", "NA"))
    bundle = await _bundle(lab, dev_keys, o.order_id)
    (report,) = _of(bundle, "DiagnosticReport")
    assert report["status"] == "registered" and "result" not in report
    assert _of(bundle, "Observation") == []
    assert {r["status"] for r in _of(bundle, "ServiceRequest")} == {"active"}

    # Only K resulted, confirmed and verified: the report is partial.
    await receive(lab, dev_keys, t.barcode)
    await report_results(lab, dev_keys, t.barcode, obs("K", "4.0"))
    async with http(lab, dev_keys) as staff:
        assert (await staff.post(f"/specimens/{t.barcode}/confirm")).status_code == 200
    async with physician(lab, dev_keys) as doctor:
        assert (await doctor.post(f"/orders/{o.order_id}/verify")).status_code == 200
    bundle = await _bundle(lab, dev_keys, o.order_id)
    (report,) = _of(bundle, "DiagnosticReport")
    assert report["status"] == "partial"
    statuses = {r["identifier"][0]["value"]: r["status"] for r in _of(bundle, "ServiceRequest")}
    assert statuses == {f"{o.order_id}/K": "completed", f"{o.order_id}/NA": "active"}


async def test_an_avoided_test_is_a_revoked_request_and_nothing_is_reported_for_it(
        lab, dev_keys):
    patient = new_patient()
    await verified_order(lab, dev_keys, ("K",), patient=patient)
    reuser = order(dev_keys.institution_id, tests=("K", "NA"), patient_ref=patient)
    await lab.terminal.publish(reuser)
    await one(lab, "duplicate_avoided.v1", order_id=reuser.order_id)
    bundle = await _bundle(lab, dev_keys, reuser.order_id)
    statuses = {r["identifier"][0]["value"]: r["status"] for r in _of(bundle, "ServiceRequest")}
    assert statuses == {f"{reuser.order_id}/K": "revoked", f"{reuser.order_id}/NA": "active"}
    (report,) = _of(bundle, "DiagnosticReport")
    assert [r["identifier"]["value"] for r in report["basedOn"]] == [f"{reuser.order_id}/NA"]


async def test_the_fhir_view_is_scoped_as_the_order_is(lab, dev_keys):
    o, _ = await verified_order(lab, dev_keys, ("K",))
    path = f"/orders/{o.order_id}/fhir"
    async with clinician(lab, dev_keys, OTHER_CLINIC) as other:
        assert (await other.get(path)).status_code == 404
        # "absent" answers as "not yours" does.
        assert (await other.get("/orders/no-such-order/fhir")).status_code == 404
    async with http(lab, dev_keys, OTHER_CENTRE) as other_centre:
        assert (await other_centre.get(path)).status_code == 404
    async with http(lab, dev_keys, roles=("courier",)) as courier:
        assert (await courier.get(path)).status_code == 403
    async with http(lab, dev_keys) as own_centre:
        answer = await own_centre.get(path)
    assert answer.status_code == 200
    assert fhir.ORDER == answer.json()["identifier"]["system"]

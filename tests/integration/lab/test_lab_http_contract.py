"""The running lab answers as its OpenAPI says (issue 9, "The OpenAPI is a
contract too"): the 4xx bodies it serves validate against the document it
serves; an amendment past the result's limits is refused, not a 500; in
production the documentation is not served without a token."""

from __future__ import annotations

import json

import httpx
import pytest
from jsonschema import Draft202012Validator
from labjourney import LAB_CENTRE, fetchval, ordered_tube, verified_order
from yigongti_kit.auth import issue_token
from yigongti_lab import openapi


def token(dev_keys, institution: str, roles: list[str]) -> dict[str, str]:
    bearer = issue_token(dev_keys.auth_private_pem, user="u-1", institution=institution,
                         roles=roles, audience="lab")
    return {"Authorization": f"Bearer {bearer}"}


@pytest.fixture
async def client(lab):
    base = f"http://{lab.settings.http_host}:{lab.settings.http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:
        yield c


def documented(doc: dict, method: str, template: str, status: int) -> Draft202012Validator:
    responses = doc["paths"][template][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {template} does not document {status}"
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    return Draft202012Validator({**schema, "components": doc["components"]})


async def test_the_4xx_answers_the_lab_serves_are_the_ones_its_openapi_documents(
        lab, dev_keys, client):
    clinician = token(dev_keys, dev_keys.institution_id, ["clinician"])
    tech = token(dev_keys, LAB_CENTRE, ["lab_technologist"])
    phys = token(dev_keys, LAB_CENTRE, ["lab_physician"])
    nobody = token(dev_keys, dev_keys.institution_id, [])
    served = await client.get("/openapi.json", headers=clinician)
    assert served.status_code == 200
    doc = served.json()
    assert doc == json.loads(openapi.PATH.read_text())  # what it serves is what is checked in
    o, tube = await ordered_tube(lab, dev_keys, ("K",))
    verified, _ = await verified_order(lab, dev_keys, ("K",))
    amend = f"/orders/{verified.order_id}/amend"
    receipt_body = {"inspection": {"not_haemolysed": True, "not_lipaemic": True,
                                   "not_clotted": True, "volume_sufficient": True,
                                   "right_tube": True, "label_matches": True}}
    cases = [  # method, template, path, headers, json, expected status
        ("GET", "/orders/{order_id}", f"/orders/{o.order_id}", {}, None, 401),
        ("POST", "/orders/{order_id}/amend", amend, {"Authorization": "Bearer x.y.z"},
         {"observation_id": "B1.K.1", "value": "1", "reason": "other"}, 401),
        ("GET", "/worklist", "/worklist", nobody, None, 403),
        ("POST", "/specimens/{barcode}/confirm", f"/specimens/{tube.barcode}/confirm",
         clinician, None, 403),
        ("POST", "/specimens/{barcode}/receipt", "/specimens/BNOSUCH01/receipt", tech,
         receipt_body, 404),
        ("POST", "/critical-values/{critical_id}/call-backs", "/critical-values/CV-1/call-backs",
         tech, {"outcome": "unable_to_reach"}, 404),
        ("POST", "/specimens/{barcode}/confirm", f"/specimens/{tube.barcode}/confirm", tech,
         None, 409),
        ("POST", "/orders/{order_id}/verify", f"/orders/{verified.order_id}/verify", phys,
         None, 409),
        ("POST", "/orders/{order_id}/amend", amend, phys,
         {"observation_id": "B1.K.1", "value": "1" * 100_000, "reason": "other"}, 413),
        ("POST", "/orders/{order_id}/amend", amend, phys,
         {"observation_id": "B1.K.1", "value": "1", "reason": "guess"}, 422),
        ("GET", "/orders/{order_id}", "/orders/%00", clinician, None, 422),
        ("GET", "/feed", "/feed?after=9223372036854775808", clinician, None, 422),
        ("POST", "/critical-values/{critical_id}/call-backs", "/critical-values/CV-1/call-backs",
         tech, {"outcome": "confirmed_read_back"}, 422),
    ]
    for method, template, path, headers, body, status in cases:
        response = await client.request(method, path, headers=headers, json=body)
        assert response.status_code == status, (method, path, response.text)
        errors = list(documented(doc, method, template, status).iter_errors(response.json()))
        assert not errors, (method, path, status, response.json(), errors[0].message)


async def test_an_amendment_past_the_result_limits_is_refused_not_a_500(lab, dev_keys, client):
    o, _ = await verified_order(lab, dev_keys, ("K",))
    observation = await fetchval(lab, "SELECT observation_id FROM results WHERE order_id = $1",
                                 o.order_id)
    phys = token(dev_keys, LAB_CENTRE, ["lab_physician"])
    url = f"/orders/{o.order_id}/amend"
    answers = {}
    for change in ({"value": "1e13"}, {"value": "1234567890123"}, {"value": "0.1234567"},
                   {"value": 4.5}, {"coded_value": ""}, {"value": "4.5", "coded_value": "POS"},
                   {}):
        response = await client.post(url, headers=phys, json={
            "observation_id": observation, "reason": "transcription_error", **change})
        answers[str(change)] = response.status_code
    assert answers == {change: 422 for change in answers}
    response = await client.post(url, headers=phys, json={
        "observation_id": observation, "reason": "transcription_error", "coded_value": "POS"})
    assert response.status_code == 409  # a coded value for a numeric result
    response = await client.post(url, headers=phys, json={
        "observation_id": observation, "reason": "transcription_error", "value": "4.6"})
    assert response.status_code == 200


DOCS = ("/docs", "/redoc", "/openapi.json", "/asyncapi", "/asyncapi.yaml")


async def test_in_production_the_documentation_needs_a_token(lab, dev_keys, client):
    assert not lab.settings.docs_public  # the default
    for path in DOCS:
        response = await client.get(path)
        assert response.status_code == 401, path
    clinician = token(dev_keys, dev_keys.institution_id, ["clinician"])
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert (await client.get(path, headers=clinician)).status_code == 200, path


@pytest.mark.parametrize("lab_overrides", [{"DOCS_PUBLIC": "true"}])
async def test_a_development_lab_may_serve_its_documentation_to_anyone(lab, client):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert (await client.get(path)).status_code == 200, path

"""HTTP of the running lab (issue 2: no token 401, a wrong role 403; issue 8
item 9: an order outside the caller's scope 404, as an absent one): GET
/orders/{id} is scoped to the ordering clinic and the lab centre."""

from __future__ import annotations

import httpx
import pytest
from labflow import ce_type, order, payload
from yigongti_kit.auth import generate_keypair, issue_token

LAB_CENTRE = "652325-L01"
OTHER_CLINIC = "652325-B02"


@pytest.fixture
async def placed(lab, dev_keys):
    """An accepted order of the demo terminal's clinic, and a client of the lab's HTTP."""
    o = order(dev_keys.institution_id)
    await lab.terminal.publish(o)
    await lab.events.wait_for(
        lambda r: ce_type(r).endswith("order.accepted.v1")
        and payload(r)["order_id"] == o.order_id)
    base = f"http://{lab.settings.http_host}:{lab.settings.http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        yield o, client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token(dev_keys, institution: str, roles, *, audience: str = "lab", key=None) -> str:
    return issue_token(key or dev_keys.auth_private_pem, user="u-1", institution=institution,
                       roles=roles, audience=audience)


# One running lab per test is the slow part (about 1.3 s), so each test
# checks every case of one answer.


async def test_no_token_or_a_bad_token_is_401(placed, dev_keys):
    o, client = placed
    response = await client.get(f"/orders/{o.order_id}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"

    inst = dev_keys.institution_id
    bad_tokens = {
        "garbage": "not.a.token",
        "other_key": token(dev_keys, inst, ["clinician"], key=generate_keypair()[0]),
        "other_audience": token(dev_keys, inst, ["clinician"], audience="settlement"),
        "expired": issue_token(dev_keys.auth_private_pem, user="u-1", institution=inst,
                               roles=["clinician"], audience="lab", ttl_s=1,
                               now=1_000_000_000),
    }
    for kind, bad in bad_tokens.items():
        response = await client.get(f"/orders/{o.order_id}", headers=bearer(bad))
        assert response.status_code == 401, kind
        assert response.headers["www-authenticate"].startswith(
            'Bearer error="invalid_token"'), kind
        assert o.patient_ref not in response.text


async def test_a_wrong_role_is_403_and_a_wrong_institution_404(placed, dev_keys):
    """Without a role that may read orders: 403, whatever the order. With one,
    of an institution outside the order's scope: 404, as for an absent order
    (issue 8 item 9)."""
    o, client = placed
    inst = dev_keys.institution_id
    callers = {
        "clinician of another institution": (OTHER_CLINIC, ["clinician"], 404),
        "lab staff of the clinic, not the centre": (inst, ["lab_technologist"], 404),
        "clinic user without a role": (inst, [], 403),
        "clinic user with another role": (inst, ["insurance_officer"], 403),
        "lab centre user without a lab role": (LAB_CENTRE, ["insurance_officer"], 403),
    }
    for who, (institution, roles, status) in callers.items():
        response = await client.get(f"/orders/{o.order_id}",
                                    headers=bearer(token(dev_keys, institution, roles)))
        assert response.status_code == status, who
        assert o.patient_ref not in response.text


async def test_the_ordering_clinic_and_the_lab_centre_read_the_order(placed, dev_keys):
    o, client = placed
    response = await client.get(
        f"/orders/{o.order_id}",
        headers=bearer(token(dev_keys, dev_keys.institution_id, ["clinician"])))
    assert response.status_code == 200
    body = response.json()
    assert body["order_id"] == o.order_id
    assert body["ordering_institution"] == dev_keys.institution_id
    assert body["lab_centre"] == LAB_CENTRE
    assert [(t["test_code"], t["status"]) for t in body["tests"]] == [
        ("CTNI", "ordered"), ("K", "ordered")]

    response = await client.get(
        f"/orders/{o.order_id}",
        headers=bearer(token(dev_keys, LAB_CENTRE, ["lab_technologist"])))
    assert response.status_code == 200
    assert response.json() == body


async def test_an_absent_order_answers_as_one_out_of_scope(placed, dev_keys):
    """An order id reveals nothing: an absent order and another clinic's order
    get the same answer, and a caller without a role learns nothing either."""
    o, client = placed
    absent = "O-doesnotexist"
    for institution, roles in ((OTHER_CLINIC, ["clinician"]),
                               (dev_keys.institution_id, [])):
        headers = bearer(token(dev_keys, institution, roles))
        existing = await client.get(f"/orders/{o.order_id}", headers=headers)
        missing = await client.get(f"/orders/{absent}", headers=headers)
        assert (missing.status_code, missing.json()) == (existing.status_code, existing.json())

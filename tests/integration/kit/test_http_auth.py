"""Bearer tokens and scoping on a small FastAPI app built like a service's."""

import time

import httpx
import pytest
from fastapi import Depends
from yigongti_kit.auth import (
    Principal,
    ensure_institution,
    generate_keypair,
    issue_token,
    require_principal,
    require_roles,
)
from yigongti_kit.http import create_http_app
from yigongti_kit.settings import KitSettings

PRIVATE, PUBLIC = generate_keypair()
OTHER_PRIVATE, _ = generate_keypair()


def make_app(public_key=PUBLIC):
    app = create_http_app("test", KitSettings(service_name="lab", auth_public_key=public_key))

    @app.get("/whoami")
    async def whoami(principal: Principal = Depends(require_principal)):
        return {"user": principal.user, "inst": principal.institution}

    @app.get("/institutions/{institution_id}/orders")
    async def orders(
        institution_id: str, principal: Principal = Depends(require_roles("clinician"))
    ):
        ensure_institution(principal, institution_id)
        return {"institution": institution_id, "orders": []}

    return app


@pytest.fixture
async def client():
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://lab") as c:
        yield c


def bearer(private=PRIVATE, **claims):
    args = dict(user="u1", institution="CJ-VC-001", roles=["clinician"], audience="lab")
    args.update(claims)
    return {"Authorization": f"Bearer {issue_token(private, **args)}"}


async def test_no_token_is_401(client):
    response = await client.get("/institutions/CJ-VC-001/orders")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["detail"] == "missing_token"


async def test_other_scheme_is_401(client):
    response = await client.get("/whoami", headers={"Authorization": "Basic dTpw"})
    assert response.status_code == 401


async def test_bad_signature_is_401(client):
    response = await client.get("/whoami", headers=bearer(private=OTHER_PRIVATE))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert response.json()["detail"] == "bad_signature"


async def test_expired_token_is_401(client):
    token = issue_token(
        PRIVATE,
        user="u1",
        institution="CJ-VC-001",
        roles=["clinician"],
        audience="lab",
        ttl_s=60,
        now=time.time() - 7200,
    )
    response = await client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401 and response.json()["detail"] == "expired"
    assert "expired" in response.headers["www-authenticate"]


async def test_token_for_another_service_is_401(client):
    response = await client.get("/whoami", headers=bearer(audience="settlement"))
    assert response.status_code == 401 and response.json()["detail"] == "wrong_audience"


async def test_wrong_institution_is_403(client):
    response = await client.get("/institutions/CJ-VC-002/orders", headers=bearer())
    assert response.status_code == 403
    assert response.json()["detail"] == "institution out of scope"


async def test_missing_role_is_403(client):
    response = await client.get("/institutions/CJ-VC-001/orders", headers=bearer(roles=["nurse"]))
    assert response.status_code == 403
    assert response.json()["detail"] == "missing role: clinician"


async def test_right_token_role_and_institution_is_200(client):
    response = await client.get("/institutions/CJ-VC-001/orders", headers=bearer())
    assert response.status_code == 200
    assert response.json() == {"institution": "CJ-VC-001", "orders": []}
    who = await client.get("/whoami", headers=bearer(roles=[]))
    assert who.json() == {"user": "u1", "inst": "CJ-VC-001"}


async def test_health_routes_need_no_token(client):
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200


async def test_service_without_a_key_fails_closed():
    transport = httpx.ASGITransport(app=make_app(public_key=None))
    async with httpx.AsyncClient(transport=transport, base_url="http://lab") as c:
        response = await c.get("/whoami", headers=bearer())
    assert response.status_code == 500

"""Hostile HTTP requests to the running lab (issue 9, faults 3, 4, 5 and 8):
each is refused with a 4xx that names fields and codes, never a 500; no
answer and no log line carries what was sent."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from labjourney import LAB_CENTRE
from yigongti_kit.auth import issue_token

SECRET = "Zhang-San-650102199001011234"
CLIENT_LOGGERS = ("httpx", "httpcore")


def token(dev_keys, institution: str, roles: list[str]) -> dict[str, str]:
    bearer = issue_token(dev_keys.auth_private_pem, user="u-1", institution=institution,
                         roles=roles, audience="lab")
    return {"Authorization": f"Bearer {bearer}"}


@pytest.fixture
async def client(lab):
    base = f"http://{lab.settings.http_host}:{lab.settings.http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:
        yield c


@pytest.fixture
def staff(dev_keys):
    """Headers of each caller: the clinic's clinician, the centre's technologist and physician."""
    return {"clinician": token(dev_keys, dev_keys.institution_id, ["clinician"]),
            "technologist": token(dev_keys, LAB_CENTRE, ["lab_technologist"]),
            "physician": token(dev_keys, LAB_CENTRE, ["lab_physician"])}


def server_logs(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if not r.name.startswith(CLIENT_LOGGERS)]


def assert_nothing_logged(caplog, *values: str) -> None:
    handler = logging.Handler()
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    records = server_logs(caplog)
    assert not [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    text = "\n".join(handler.format(r) for r in records)
    for value in values:
        assert value not in text


# --- fault 3: 1e309, and 422 answers echoing the input -------------------------------


@pytest.mark.parametrize("route, role, body", [
    ("/critical-values/CV-1/call-backs", "technologist",
     '{"outcome": "confirmed_read_back", "reached": "doc-17", "x": 1e309}'),
    ("/orders/O-1/amend", "physician",
     '{"observation_id": "B1.K.1", "value": 1e309, "reason": "other"}'),
])
async def test_a_number_json_cannot_render_is_422_not_500(client, staff, caplog, route, role,
                                                          body):
    caplog.set_level(logging.INFO)
    response = await client.post(route, content=body,
                                 headers={**staff[role], "content-type": "application/json"})
    assert response.status_code == 422
    assert "inf" not in response.text.lower()
    assert_nothing_logged(caplog, "1e309", "inf")


async def test_a_422_of_the_lab_echoes_nothing_sent(client, staff, caplog):
    caplog.set_level(logging.INFO)
    response = await client.post("/orders/O-1/amend", headers=staff["physician"], json={
        "observation_id": "B1.K.1", "value": f"<script>{SECRET}", "reason": SECRET})
    assert response.status_code == 422
    assert SECRET not in response.text and "<script>" not in response.text
    for error in response.json()["detail"]:
        assert set(error) == {"loc", "type"}
    assert_nothing_logged(caplog, SECRET)


# --- fault 4: NUL and other control characters never reach PostgreSQL ---------------

ID_ROUTES = [
    ("GET", "/orders/{}", "clinician"),
    ("GET", "/orders/{}/report", "clinician"),
    ("GET", "/orders/{}/fhir", "clinician"),
    ("GET", "/patients/{}/recognised-results", "clinician"),
    ("POST", "/specimens/{}/receipt", "technologist"),
    ("POST", "/specimens/{}/confirm", "technologist"),
    ("POST", "/orders/{}/verify", "physician"),
    ("POST", "/orders/{}/amend", "physician"),
    ("POST", "/critical-values/{}/call-backs", "technologist"),
]
BODIES = {"/receipt": {"inspection": {"not_haemolysed": True, "not_lipaemic": True,
                                      "not_clotted": True, "volume_sufficient": True,
                                      "right_tube": True, "label_matches": True}},
          "/amend": {"observation_id": "B1.K.1", "value": "4.5", "reason": "other"},
          "/call-backs": {"outcome": "confirmed_read_back", "reached": "doc-17"}}


async def test_a_control_character_in_an_id_is_refused_before_the_database(
        client, staff, caplog):
    caplog.set_level(logging.INFO)
    answers = {}
    for method, route, role in ID_ROUTES:
        body = next((b for suffix, b in BODIES.items() if route.endswith(suffix)), None)
        for hostile in ("%00", "O-1%00", "a%01b", "%7F"):
            response = await client.request(method, route.format(hostile),
                                            headers=staff[role], json=body)
            answers[f"{method} {route.format(hostile)}"] = (
                response.status_code, response.json()["detail"][0].get("type")
                if response.status_code == 422 else response.text[:80])
    assert answers == {request: (422, "control_character") for request in answers}
    assert_nothing_logged(caplog)


async def test_a_nul_in_an_amendment_field_is_refused(client, staff, caplog):
    caplog.set_level(logging.INFO)
    for field in ("observation_id", "coded_value"):
        body = {"observation_id": "B1.K.1", "reason": "other", field: "POS\u0000"}
        response = await client.post("/orders/O-1/amend", headers=staff["physician"], json=body)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", field]
    assert_nothing_logged(caplog)


# --- fault 5: integers the database cannot hold --------------------------------------


async def test_an_integer_beyond_the_database_is_422_and_the_largest_it_holds_is_not(
        client, staff, caplog):
    caplog.set_level(logging.INFO)
    for name, value in (("after", "9223372036854775808"), ("after", "-1"),
                        ("after", "99999999999999999999999999"),
                        ("limit", "9223372036854775808")):
        response = await client.get(f"/feed?{name}={value}", headers=staff["clinician"])
        assert response.status_code == 422, (name, value)
        assert [e["loc"] for e in response.json()["detail"]] == [["query", name]]
        assert value not in response.text
        assert_nothing_logged(caplog, value)
    response = await client.get("/feed?after=9223372036854775807", headers=staff["clinician"])
    assert response.status_code == 200
    assert response.json() == {"items": [], "next": 9223372036854775807}


# --- fault 8: the token before the body, and a limit on it ---------------------------


async def test_a_huge_body_gets_401_at_once_without_a_token_and_413_with_one(lab, client, staff):
    async def status_line(extra_headers: str) -> str:
        reader, writer = await asyncio.open_connection(lab.settings.http_host,
                                                       lab.settings.http_port)
        try:
            writer.write((f"POST /orders/O-1/amend HTTP/1.1\r\nHost: lab\r\n{extra_headers}"
                          "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
                          ).encode())
            await writer.drain()
            return (await asyncio.wait_for(reader.readline(), 3)).decode().strip()
        finally:
            writer.close()

    assert await status_line("") == "HTTP/1.1 401 Unauthorized"
    authorization = staff["physician"]["Authorization"]
    assert (await status_line(f"Authorization: {authorization}\r\n")).startswith("HTTP/1.1 413 ")

    field = {"observation_id": "B1.K.1", "value": "1" * 2_000_000, "reason": "other"}
    response = await client.post("/orders/O-1/amend", headers=staff["physician"], json=field)
    assert response.status_code == 413

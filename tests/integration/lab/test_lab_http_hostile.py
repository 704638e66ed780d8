"""Hostile HTTP requests to the running lab (issue 9, faults 3, 4, 5 and 8):
each is refused with a 4xx that names fields and codes, never a 500; no
answer and no log line carries what was sent."""

from __future__ import annotations

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

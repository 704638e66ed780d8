"""The edge of a service's HTTP app (issue 9): what a hostile request gets
back, and what it leaves in the logs. A small app built like a service's."""

from __future__ import annotations

import logging

import httpx
import pytest
from httpedge import SECRET, bearer, logged, make_app


@pytest.fixture
async def client():
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc",
                                 headers=bearer()) as c:
        yield c


# --- 9.3: answers and logs carry no request values ----------------------------------


async def test_a_422_names_field_paths_and_codes_never_the_values_sent(client, caplog):
    caplog.set_level(logging.DEBUG)
    response = await client.post("/things/t1", json={"name": f"<script>{SECRET}",
                                                     "value": SECRET, "count": SECRET})
    assert response.status_code == 422
    assert response.json() == {"detail": [
        {"loc": ["body", "name"], "type": "string_pattern_mismatch"},
        {"loc": ["body", "value"], "type": "decimal_parsing"},
        {"loc": ["body", "count"], "type": "int_parsing"},
    ]}
    assert SECRET not in response.text and "<script>" not in response.text
    assert SECRET not in logged(caplog)


async def test_an_unknown_key_is_named_only_when_it_looks_like_a_field_name(client):
    response = await client.post("/things/t1", json={"name": "ok", "colour": 1, SECRET: 2})
    assert response.status_code == 422
    assert response.json() == {"detail": [
        {"loc": ["body", "colour"], "type": "extra_forbidden"},
        {"loc": ["body", "*"], "type": "extra_forbidden"},
    ]}


@pytest.mark.parametrize("number", ["1e309", "-1e309", "NaN", "Infinity"])
async def test_a_number_json_cannot_render_is_422_not_500(client, caplog, number):
    caplog.set_level(logging.DEBUG)
    response = await client.post("/things/t1", content=f'{{"name": "ok", "value": {number}}}',
                                 headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "value"]
    assert "inf" not in response.text.lower() and "nan" not in response.text.lower()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_unhandled_error_is_500_and_its_log_line_quotes_no_request_value(client, caplog):
    caplog.set_level(logging.DEBUG)
    response = await client.get("/boom", params={"q": SECRET})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal_error"}
    text = logged(caplog)
    assert SECRET not in text
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "ValueError" in error.getMessage() and "/boom" in error.getMessage()
    assert "test_http_edge.py" in error.getMessage()  # where it happened, for the developer

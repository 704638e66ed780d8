"""The edge of a service's HTTP app (issue 9): what a hostile request gets
back, and what it leaves in the logs. A small app built like a service's."""

from __future__ import annotations

import json
import logging

import asyncpg
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
    assert "httpedge.py" in error.getMessage()  # where it happened, for the developer


# --- 9.4: control characters are refused at the edge ---------------------------------


async def asgi(app, method: str, path: str, headers=(), body: bytes = b"") -> tuple[int, dict]:
    """One request straight through the ASGI app, with headers no client would send."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "server": ("svc", 80),
             "client": ("127.0.0.1", 1), "headers": [*bearer_raw(), *headers]}
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    status = sent[0]["status"]
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    return status, json.loads(payload) if payload else {}


def bearer_raw() -> list[tuple[bytes, bytes]]:
    return [(b"authorization", bearer()["Authorization"].encode())]


@pytest.mark.parametrize("path, loc", [
    ("/things/%00", ["path"]),
    ("/things/a%01b", ["path"]),
    ("/things/a%7Fb", ["path"]),
    ("/things/a%C2%85b", ["path"]),   # U+0085, a C1 control
    ("/things/t1?q=%00", ["query", "q"]),
    ("/things/t1?q=a%1Bb", ["query", "q"]),
    ("/things/t1?a%00b=1", ["query", "*"]),
])
async def test_a_control_character_in_the_path_or_query_is_refused(client, path, loc):
    response = await client.get(path)
    assert response.status_code == 422
    assert response.json() == {"detail": [{"loc": loc, "type": "control_character"}]}


async def test_a_query_parameter_without_a_name_is_refused(client):
    response = await client.get("/things/t1?q=1&=null")
    assert response.status_code == 422
    assert response.json() == {"detail": [{"loc": ["query", "*"], "type": "empty_name"}]}


@pytest.mark.parametrize("value", ["a\x00b", "a\x01b", "\x7f", "a\ud800b"])
async def test_a_control_character_in_a_json_string_is_refused(client, value):
    for body, loc in (({"name": value}, ["body", "name"]),
                      ({"name": "ok", value: 1}, ["body", "*"])):
        response = await client.post("/things/t1", content=json.dumps(body),
                                     headers={"content-type": "application/json"})
        assert response.status_code == 422
        [error] = response.json()["detail"]
        assert error["loc"] == loc
        assert error["type"] in ("control_character", "invalid_character")


async def test_a_control_character_in_a_header_is_refused():
    status, body = await asgi(make_app(), "GET", "/things/t1",
                              headers=[(b"x-terminal-id", b"t-1\x00")])
    assert status == 422
    assert body == {"detail": [{"loc": ["header", "x-terminal-id"],
                                "type": "control_character"}]}


async def test_a_tab_in_a_header_is_not_a_control_character_to_refuse():
    status, _ = await asgi(make_app(), "GET", "/things/t1", headers=[(b"x-note", b"a\tb")])
    assert status == 200


# --- 9.5: integers the database cannot hold -----------------------------------------


@pytest.mark.parametrize("count", [2**63, -(2**63) - 1, 10**40])
async def test_an_integer_beyond_64_bits_in_a_body_is_refused(client, caplog, count):
    caplog.set_level(logging.DEBUG)
    response = await client.post("/things/t1", content=f'{{"name": "ok", "count": {count}}}',
                                 headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json() == {"detail": [{"loc": ["body", "count"],
                                           "type": "number_out_of_range"}]}
    assert str(count) not in logged(caplog)


async def test_a_64_bit_integer_is_accepted(client):
    response = await client.post("/things/t1", json={"name": "ok", "count": 2**63 - 1})
    assert response.status_code == 200


# --- a database away is a 503, not a 500 ----------------------------------------------


@pytest.mark.parametrize("error", [ConnectionRefusedError, TimeoutError,
                                   asyncpg.CannotConnectNowError,
                                   asyncpg.DeadlockDetectedError])
async def test_a_database_away_or_a_lost_race_is_503_with_retry_after(caplog, error):
    caplog.set_level(logging.DEBUG)
    app = make_app()

    @app.get("/db")
    async def db(q: str = ""):
        raise error(f"while looking up {q}")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        response = await client.get("/db", params={"q": SECRET})
    assert response.status_code == 503
    assert response.json() == {"detail": "unavailable"}
    assert response.headers["retry-after"] == "1"
    assert SECRET not in logged(caplog)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

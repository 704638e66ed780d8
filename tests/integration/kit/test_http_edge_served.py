"""The kit's HTTP edge on a real socket (uvicorn, as a service serves it):
what uvicorn logs, when a body is read, how much of it."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from httpedge import SECRET, bearer, logged, make_app
from yigongti_kit.http import bound_port, serve, shutdown


@pytest.fixture
async def served():
    app = make_app()
    server, task = await serve(app, "127.0.0.1", 0)
    try:
        yield bound_port(server)
    finally:
        await shutdown(server, task)


async def test_uvicorn_logs_no_request_line_and_no_traceback_quoting_a_value(served, caplog):
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served}",
                                 headers=bearer()) as client:
        assert (await client.get(f"/things/{SECRET}", params={"q": SECRET})).status_code == 200
        assert (await client.get("/boom", params={"q": SECRET})).status_code == 500
    assert SECRET not in logged(caplog)


# --- 9.8: the token before the body; a limit on the body ---------------------------


async def raw_request(port: int, head: str, body: bytes = b"", timeout_s: float = 3.0) -> str:
    """Send `head` (and maybe part of a body) and return the status line, without
    sending the rest: a server that waits for the whole body never answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout_s)
        return line.decode().strip()
    finally:
        writer.close()


async def test_a_huge_declared_body_without_a_token_is_401_at_once(served):
    head = ("POST /things/t1 HTTP/1.1\r\nHost: svc\r\nContent-Type: application/json\r\n"
            "Content-Length: 100000000\r\n")
    assert await raw_request(served, head, b'{"name": ') == "HTTP/1.1 401 Unauthorized"


async def test_a_huge_declared_body_with_a_bad_token_is_401_at_once(served):
    head = ("POST /things/t1 HTTP/1.1\r\nHost: svc\r\nContent-Type: application/json\r\n"
            "Authorization: Bearer not.a.token\r\nContent-Length: 100000000\r\n")
    assert await raw_request(served, head) == "HTTP/1.1 401 Unauthorized"


async def test_a_huge_declared_body_with_a_token_is_413_at_once(served):
    head = ("POST /things/t1 HTTP/1.1\r\nHost: svc\r\nContent-Type: application/json\r\n"
            f"Authorization: {bearer()['Authorization']}\r\nContent-Length: 100000000\r\n")
    assert (await raw_request(served, head)).startswith("HTTP/1.1 413 ")


async def test_a_chunked_body_over_the_limit_is_413(served):
    sent = 0

    async def chunks():
        nonlocal sent
        yield b'{"name": "ok", "value": "'
        for _ in range(64):  # 4 MiB in all, never declared
            sent += 65536
            yield b"1" * 65536
        yield b'"}'

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served}",
                                 headers=bearer()) as client:
        response = await client.post("/things/t1", content=chunks(),
                                     headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {"detail": "body_too_large"}


async def test_a_body_within_the_limit_is_read_whole(served):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served}",
                                 headers=bearer()) as client:
        response = await client.post("/things/t1", json={"name": "ok", "value": "1" * 1000})
    assert response.status_code == 200


async def test_a_route_may_allow_a_larger_body_and_the_setting_sets_the_default():
    from fastapi import Depends
    from yigongti_kit.auth import Principal, require_principal
    from yigongti_kit.http_edge import body_limit

    app = make_app(http_max_body_bytes=1000)

    @app.post("/uploads", openapi_extra=body_limit(3_000_000))
    async def upload(body: dict, principal: Principal = Depends(require_principal)):
        return {"size": len(body["data"])}

    big = {"data": "x" * 2_000_000}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc",
                                 headers=bearer()) as client:
        assert (await client.post("/uploads", json=big)).status_code == 200
        assert (await client.post("/things/t1", json={"name": "ok", "value": "1" * 2000})
                ).status_code == 413
        assert (await client.post("/things/t1", json={"name": "ok"})).status_code == 200

"""The kit's HTTP edge on a real socket (uvicorn, as a service serves it):
what uvicorn logs, when a body is read, how much of it."""

from __future__ import annotations

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

"""uvicorn inside the service's event loop: listens, drains on shutdown."""

import asyncio

import httpx
import pytest
from yigongti_kit.http import bound_port, create_http_app, serve, shutdown
from yigongti_kit.settings import KitSettings


async def test_serves_on_a_free_port_and_finishes_in_flight_requests_on_shutdown():
    app = create_http_app("test", KitSettings(service_name="lab"))
    started = asyncio.Event()

    @app.get("/slow")
    async def slow():
        started.set()
        await asyncio.sleep(0.5)
        return {"done": True}

    server, task = await serve(app, "127.0.0.1", 0)
    port = bound_port(server)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert (await client.get("/healthz")).status_code == 200
        in_flight = asyncio.create_task(client.get("/slow"))
        await started.wait()
        await shutdown(server, task)
        response = await in_flight
    assert response.status_code == 200 and response.json() == {"done": True}
    assert task.done()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/healthz")


async def test_port_in_use_is_an_error_not_an_exit():
    app = create_http_app("test", KitSettings(service_name="lab"))
    server, task = await serve(app, "127.0.0.1", 0)
    try:
        with pytest.raises(RuntimeError, match="failed to start"):
            await serve(app, "127.0.0.1", bound_port(server))
    finally:
        await shutdown(server, task)

"""The HTTP side of a service: a FastAPI app with health, auth and tracing wired,
served by uvicorn inside the service's own event loop.

    app = create_http_app("lab", settings)
    app.include_router(api.router)     # see http_edge, http_openapi
    server, task = await serve(app, settings.HTTP_HOST, settings.HTTP_PORT)
    ...
    await shutdown(server, task)   # stop accepting, finish in-flight requests

Routes name their roles and, when not the default, their body limit:

    @router.post("/things", openapi_extra=roles("clinician") | body_limit(1_000_000))

The service owns its signals: uvicorn's own SIGINT/SIGTERM handlers are not
installed; the service's handler calls `shutdown` (or sets `server.should_exit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from yigongti_kit.auth import ISSUER
from yigongti_kit.health import Health
from yigongti_kit.http_edge import Edge, validation_failed
from yigongti_kit.http_openapi import contract
from yigongti_kit.telemetry import instrument_fastapi


def create_http_app(title: str, settings: Any, *, health: Health | None = None) -> FastAPI:
    """A FastAPI app with /healthz and /readyz, bearer-token settings and tracing,
    behind the kit's edge (http_edge: the token before the body, body limits,
    control characters, no request value in an answer or a log line) and
    serving its OpenAPI as a contract (http_openapi).

    `app.state` holds `settings`, `health` (given, or a new one),
    `auth_public_key` (settings.auth_public_key) and `auth_audience`
    (settings.service_name), which `yigongti_kit.auth.require_principal` reads.
    """
    app = FastAPI(title=title, **_no_native_telemetry())
    health = health if health is not None else Health()
    app.state.settings = settings
    app.state.health = health
    app.state.auth_public_key = getattr(settings, "auth_public_key", None)
    app.state.auth_audience = getattr(settings, "service_name", None)
    app.state.auth_issuer = getattr(settings, "auth_issuer", None) or ISSUER
    app.include_router(health.router())
    _serve_contract(app, settings)
    # 422s name fields and codes, never the values sent (issue 9).
    app.add_exception_handler(RequestValidationError, validation_failed)
    # Innermost of the kit's middleware: the request span sees its answer.
    app.add_middleware(Edge, api=app)
    instrument_fastapi(app)
    return app


def _serve_contract(app: FastAPI, settings: Any) -> None:
    """/openapi.json serves FastAPI's document completed by `http_openapi.contract`
    (computed again only when FastAPI's is)."""
    generated = app.openapi
    cache: list[Any] = [None, None]

    def openapi() -> dict[str, Any]:
        base = generated()
        if cache[0] is not base:
            cache[:] = [base, contract(
                base, audience=getattr(settings, "service_name", app.title),
                default_body_limit=getattr(settings, "http_max_body_bytes", 65536))]
        return cache[1]

    app.openapi = openapi  # type: ignore[method-assign]


def _no_native_telemetry() -> dict[str, Any]:
    """FastAPI ≥ 0.160 traces by itself once a tracer provider is installed
    (request, dependency and serialization spans, metrics): the kit's own
    tracing (`instrument_fastapi`) is the one in charge, so FastAPI's is off."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False,
                          "operation_spans": False}}


class _Server(uvicorn.Server):
    """uvicorn without signal handling: the service decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


async def _run(server: uvicorn.Server) -> None:
    try:
        await server.serve()
    except SystemExit as exc:  # uvicorn exits on a failed bind or startup
        raise RuntimeError(f"HTTP server failed to start (exit {exc.code})") from None


async def serve(
    app: FastAPI,
    host: str,
    port: int,
    *,
    graceful_timeout_s: float = 10,
    startup_timeout_s: float = 10,
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Start serving `app` in the running loop; returns once it listens.

    Port 0 picks a free port: see `bound_port(server)`. Access logs are off,
    whatever handlers logging has (a URL carries what the caller sent);
    requests are traced instead.
    """
    logging.getLogger("uvicorn.access").disabled = True
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="auto",
        timeout_graceful_shutdown=graceful_timeout_s,
    )
    server = _Server(config)
    task = asyncio.create_task(_run(server), name=f"http:{host}:{port}")
    deadline = asyncio.get_running_loop().time() + startup_timeout_s
    while not server.started:
        if task.done():
            task.result()  # raises the startup failure
            raise RuntimeError("HTTP server stopped during startup")
        if asyncio.get_running_loop().time() > deadline:
            server.should_exit = True
            raise TimeoutError("HTTP server did not start in time")
        await asyncio.sleep(0.01)
    return server, task


def bound_port(server: uvicorn.Server) -> int:
    """The port the server actually listens on."""
    return server.servers[0].sockets[0].getsockname()[1]


async def shutdown(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    """Stop accepting connections and wait for in-flight requests to finish
    (up to the graceful timeout given to `serve`)."""
    server.should_exit = True
    await task

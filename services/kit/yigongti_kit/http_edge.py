"""The edge of a service's HTTP app: what every request meets before a route
sees it, and what becomes of an error no route handled (issue 9).

No answer and no log line carries a value a caller sent (DESIGN §6): a 422
lists field paths and error codes (`validation_failed`), an unhandled error
is a 500 whose log line names the route template, the exception types and
where they were raised, never their messages (`Edge`), and a database that
is away is a 503.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.routing import Match

from .db import is_infra_error, is_transient_error

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_ERRORS = 50


def _loc_part(part: Any) -> int | str:
    """A location step as said back: an index, a field name, or "*" for a key
    the caller made up (it could hold anything)."""
    if isinstance(part, int):
        return part
    return part if _SAFE_NAME.match(str(part)) else "*"


def field_errors(errors: list[dict]) -> list[dict]:
    """Pydantic/FastAPI errors as field paths and codes: no input, no context, no message."""
    return [{"loc": [_loc_part(p) for p in e.get("loc", ())],
             "type": e["type"] if _CODE.match(str(e.get("type", ""))) else "invalid"}
            for e in errors[:MAX_ERRORS]]


async def validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
    """The 422 of FastAPI's request validation, without the values sent."""
    return JSONResponse({"detail": field_errors(list(exc.errors()))}, status_code=422)


def safe_traceback(exc: BaseException) -> str:
    """Where an error was raised, cause first, as types and frames: no message
    (it may quote what the caller sent), no local values."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain and len(chain) < 8:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    lines: list[str] = []
    for link in reversed(chain):
        lines.append(f"{type(link).__module__}.{type(link).__qualname__}")
        for frame in traceback.extract_tb(link.__traceback__):
            lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
    return "\n".join(lines)


def _answer(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class Edge:
    """ASGI middleware around a FastAPI app's routes (innermost of the kit's own)."""

    def __init__(self, app: Any, *, api: FastAPI) -> None:
        self.app = app
        self.api = api

    def _route(self, scope: dict) -> Any:
        """The route the request will reach, or None (its template names it in logs)."""
        partial = None
        for route in self.api.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route
            if match is Match.PARTIAL and partial is None:
                partial = route
        return partial

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:  # noqa: BLE001 - every error ends here, said safely
            route = self._route(scope)
            where = f"{scope['method'][:16]} {getattr(route, 'path', '(no route)')}"
            if is_infra_error(exc) or is_transient_error(exc):
                # The database is away, or lost a race: the caller may retry.
                log.warning("%s: unavailable (%s)", where, type(exc).__name__)
                response = _answer(503, "unavailable", {"Retry-After": "1"})
            else:
                log.error("unhandled error in %s: %s\n%s", where, type(exc).__name__,
                          safe_traceback(exc))
                response = _answer(500, "internal_error")
            if not started:
                await response(scope, receive, send)

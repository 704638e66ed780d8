"""The edge of a service's HTTP app: what every request meets before a route
sees it, and what becomes of an error no route handled (issue 9).

Every request first: the documentation (/docs, /redoc, /openapi.json,
/asyncapi*) needs a valid token unless DOCS_PUBLIC is true (401; without a
verifying key, nobody gets it). Then a control character (C0, DEL, C1) in
the path or query, or a control byte other than tab in a header value, is a
422 naming where (`{"loc": ["query", "q"], "type": "control_character"}`):
such values never reach a route, nor PostgreSQL (which refuses NUL). A query
parameter without a name ("?=x") is refused too ("empty_name").

When a route asks for its body (once routed, before its dependencies run):

1. The token, for a route that needs one (it depends on `require_principal`):
   missing or invalid is a 401 at once, before a byte of the body is read.
2. The body, read whole up to the route's limit (HTTP_MAX_BODY_BYTES, or the
   route's own: `openapi_extra=body_limit(n)`): a declared Content-Length
   over it is a 413 before reading, and so is a body that streams past it
   (chunked, undeclared).
3. A JSON body is parsed once here: not JSON (or not UTF-8) is a 422
   "json_invalid"; a control character or a lone surrogate in any string,
   key or value, or a number no database column holds (an integer beyond 64
   bits, 1e309, NaN), is a 422 naming its field. The route then parses the bytes.

A route that takes no body never reads one, whatever the caller sends.

No answer and no log line carries a value a caller sent (DESIGN §6): a 422
lists field paths and error codes (`validation_failed`), an unhandled error
is a 500 whose log line names the route template, the exception types and
where they were raised, never their messages, and a database that is away is
a 503.
"""

from __future__ import annotations

import json
import logging
import math
import re
import traceback
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .auth import ISSUER, TokenError, authenticate, require_principal, unauthorized_headers
from .db import is_infra_error, is_transient_error

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_ERRORS = 50
LIMIT_KEY = "x-max-body-bytes"  # in an operation's openapi_extra, and so in its document
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def body_limit(max_bytes: int) -> dict[str, int]:
    """`openapi_extra` of a route whose bodies may be larger (or must be
    smaller) than HTTP_MAX_BODY_BYTES; the document shows the limit."""
    if max_bytes < 0:
        raise ValueError("a body limit is a number of bytes, 0 or more")
    return {LIMIT_KEY: max_bytes}


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


# Control characters (Unicode category Cc) and lone surrogates (from a JSON
# "\ud800" escape; no UTF-8 can hold them).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL_BYTE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")  # in a header: tab is whitespace
_SAFE_HEADER = re.compile(r"^[a-z0-9-]{1,64}$")


def _bad_text(text: str) -> str | None:
    if _CONTROL.search(text):
        return "control_character"
    if _SURROGATE.search(text):
        return "invalid_character"
    return None


def refuse_control_characters(scope: dict) -> None:
    """HTTPException(422) naming the first part of the request line or headers
    that holds a control character (or a query parameter without a name)."""
    code = _bad_text(scope["path"])
    if code:
        raise HTTPException(422, [{"loc": ["path"], "type": code}])
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        code = _bad_text(name) or _bad_text(value) or ("empty_name" if not name else None)
        if code:
            raise HTTPException(422, [{"loc": ["query", _loc_part(name)], "type": code}])
    for name, value in scope["headers"]:
        if _CONTROL_BYTE.search(value):
            header = name.decode("latin-1")
            header = header if _SAFE_HEADER.match(header) else "*"
            raise HTTPException(422, [{"loc": ["header", header], "type": "control_character"}])


INT64 = (-(2**63), 2**63 - 1)  # PostgreSQL bigint, the widest integer column


def refuse_bad_json(body: bytes) -> None:
    """HTTPException(422) when `body` is not JSON, a string in it (a key or a
    value) holds a control character or a lone surrogate, or a number in it is
    beyond what a column holds (bigint; a finite double)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep
        raise HTTPException(422, [{"loc": ["body"], "type": "json_invalid"}]) from None
    todo: list[tuple[list, Any]] = [(["body"], document)]
    while todo:
        loc, node = todo.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                code = _bad_text(key)
                if code:
                    raise HTTPException(422, [{"loc": [*loc, "*"], "type": code}])
                todo.append(([*loc, _loc_part(key)], value))
        elif isinstance(node, list):
            todo.extend(([*loc, i], value) for i, value in enumerate(node))
        elif isinstance(node, str):
            code = _bad_text(node)
            if code:
                raise HTTPException(422, [{"loc": loc, "type": code}])
        elif (isinstance(node, int) and not isinstance(node, bool)
              and not INT64[0] <= node <= INT64[1]) \
                or (isinstance(node, float) and not math.isfinite(node)):
            raise HTTPException(422, [{"loc": loc, "type": "number_out_of_range"}])


def _is_json(scope: dict) -> bool:
    """Whether FastAPI parses this body as JSON (its media type says so)."""
    media = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                           and media.endswith("+json"))


def _needs_principal(dependant: Any) -> bool:
    todo = [dependant]
    while todo:
        node = todo.pop()
        if node.call is require_principal:
            return True
        todo.extend(node.dependencies)
    return False


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class Edge:
    """ASGI middleware around a FastAPI app's routes (innermost of the kit's own)."""

    def __init__(self, app: Any, *, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self._token_routes: dict[int, bool] = {}

    def _needs_token(self, route: Any) -> bool:
        dependant = getattr(route, "dependant", None)
        if dependant is None:
            return False
        key = id(route)
        if key not in self._token_routes:
            self._token_routes[key] = _needs_principal(dependant)
        return self._token_routes[key]

    def _limit(self, route: Any) -> int:
        extra = getattr(route, "openapi_extra", None) or {}
        if LIMIT_KEY in extra:
            return extra[LIMIT_KEY]
        return getattr(self.api.state.settings, "http_max_body_bytes", 65536)

    def _check_token(self, scope: dict, *, route: bool = True) -> None:
        """HTTPException(401) unless the request carries a valid token."""
        state = self.api.state
        if not state.auth_public_key or not state.auth_audience:
            if route:
                return  # misconfigured: require_principal fails closed and says so
            raise HTTPException(401, "missing_token", unauthorized_headers("missing_token"))
        try:
            authenticate(_header(scope, b"authorization"), state.auth_public_key,
                         state.auth_audience, getattr(state, "auth_issuer", ISSUER))
        except TokenError as exc:
            raise HTTPException(401, exc.reason, unauthorized_headers(exc.reason)) from None

    def _guarded(self, scope: dict, receive: Any) -> Any:
        """The `receive` a route reads its body with. A route calls it only once
        routed (scope["route"] is then set), so the first call checks the token
        and reads the body whole, within the route's limit; errors raised here
        are HTTPExceptions, which FastAPI answers as they are."""
        state: dict[str, Any] = {"first": True}

        async def guarded() -> dict:
            if not state["first"]:
                return await receive()
            state["first"] = False
            route = scope.get("route")
            if self._needs_token(route):
                self._check_token(scope)
            body = await _read_body(scope, receive, self._limit(route))
            if body is None:
                return {"type": "http.disconnect"}
            if body and _is_json(scope):
                refuse_bad_json(body)
            return {"type": "http.request", "body": body, "more_body": False}

        return guarded

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
            path = scope["path"]
            if (path in DOCS_PATHS or path.startswith("/asyncapi")) \
                    and not getattr(self.api.state.settings, "docs_public", False):
                self._check_token(scope, route=False)
            refuse_control_characters(scope)
            await self.app(scope, self._guarded(scope, receive), tracked)
        except HTTPException as refused:  # raised here, before routing
            if not started:
                await _answer(refused.status_code, refused.detail, refused.headers)(
                    scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - every error ends here, said safely
            route = scope.get("route")
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


async def _read_body(scope: dict, receive: Any, limit: int) -> bytes | None:
    """The whole body, or None when the caller went away; HTTPException(413)
    when it declares or streams more than `limit` bytes (the rest is not read)."""
    declared = _header(scope, b"content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise HTTPException(413, "body_too_large")
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > limit:
            raise HTTPException(413, "body_too_large")
        if not message.get("more_body", False):
            return bytes(body)

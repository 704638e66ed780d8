"""The diagnostician's workstation: pages under /ws served by the diagnosis service.

Sign-in with the user file (users.py) starts a session kept in PostgreSQL
(sessions.py): an HttpOnly, SameSite=Strict cookie, Secure unless
WORKSTATION_COOKIE_SECURE=false (development over plain HTTP). Every POST
carries the session's CSRF token (form field `csrf` or header X-CSRF-Token),
the sign-in form a pre-session one (double submit). A reader sees their
centre's studies of the modalities they are qualified for; anything else is
answered as a missing study and recorded (scope_refusals). Every view of a
study is recorded in ws_audit. The actions reuse the API's (api._act: the
request's row locked under the service's one lock rule, locking.py).

The worklist page listens to /ws/events (server-sent events): the stream
looks at the worklist in the database every `sse_poll_seconds` and says
`worklist` when it changed, so a claim through another replica shows too.
The pages are not part of the OpenAPI document (they are not the API).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from functools import cache
from importlib.resources import files
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError
from yigongti_contracts.diagnosis.codes import AmendmentReason
from yigongti_contracts.refdata import load as load_refdata

from .. import conclusions, critical, ecg_svg, imaging, reports, worklist
from ..api import _act, qualified
from ..pacs import PacsUnavailable
from ..recording import Recording
from . import pages, sessions, users

log = logging.getLogger("yigongti.diagnosis.workstation")

SECURE_ENV = "WORKSTATION_COOKIE_SECURE"
PRE_COOKIE = "ygt_ws_pre"
READER = "diagnostician"
FORM_LIMIT = {"x-max-body-bytes": 256 * 1024}  # a report's texts, percent-encoded
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
}

router = APIRouter(prefix="/ws", include_in_schema=False)

WORKLIST_SQL = """
    SELECT request_id, modality, priority, due_at, status, claimed_by, requesting_institution,
           sex, age, indications, symptom_onset
      FROM requests
     WHERE reading_centre = $1 AND status IN ('queued', 'claimed') AND modality = ANY($2::text[])
     ORDER BY priority_rank, due_at, request_id
     LIMIT 500"""

FINGERPRINT_SQL = """
    SELECT md5(coalesce(string_agg(request_id || ':' || status || ':' || coalesce(claimed_by, ''),
                                   ',' ORDER BY request_id), ''))
      FROM requests
     WHERE reading_centre = $1 AND status IN ('queued', 'claimed') AND modality = ANY($2::text[])"""


@cache
def _names() -> dict[str, str]:
    return {i.id: i.name for i in load_refdata().institutions}


@cache
def _callbacks() -> dict[str, str]:
    return yaml_load("contacts.yaml").get("callback", {})


def yaml_load(name: str) -> dict:
    import yaml

    return yaml.safe_load((files("yigongti_diagnosis.workstation") / name).read_text("utf-8"))


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def _pool(request: Request):
    return request.app.state.pool


def _secure(request: Request) -> bool:
    return request.app.state.ws_cookie_secure


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


class NotSignedIn(Exception):
    pass


class Refused(Exception):
    """A 403 answered as a page: `key` is its message (csrf.refused, forbidden)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


async def _session(request: Request, *, touch: bool = True) -> sessions.Session:
    async with _pool(request).acquire() as conn:
        found = await sessions.resume(conn, request.cookies.get(sessions.COOKIE), touch=touch)
    if found is None:
        raise NotSignedIn
    return found


def _to_login() -> Response:
    response = RedirectResponse("/ws/login", status_code=303, headers=HEADERS)
    return response


async def _post_session(request: Request) -> tuple[sessions.Session, dict[str, str]]:
    """The session of a POST whose CSRF token matches, and its form; else 403."""
    found = await _session(request)
    form = await _form(request)
    sent = form.get("csrf") or request.headers.get("x-csrf-token")
    if not sessions.csrf_ok(found, sent):
        raise Refused("csrf.refused")
    return found, form


def _reader(found: sessions.Session) -> None:
    if READER not in found.principal.roles:
        raise Refused("forbidden")


# --- sign-in --------------------------------------------------------------------


@router.get("/")
async def home() -> Response:
    return RedirectResponse("/ws/worklist", status_code=303, headers=HEADERS)


@router.get("/login")
async def login_page(request: Request) -> Response:
    pre = secrets.token_urlsafe(24)
    response = _html(pages.login(pre))
    response.set_cookie(PRE_COOKIE, pre, httponly=True, samesite="strict",
                        secure=_secure(request), path="/ws/login")
    return response


@router.post("/login", openapi_extra=FORM_LIMIT)
async def login(request: Request) -> Response:
    form = await _form(request)
    pre = request.cookies.get(PRE_COOKIE)
    if not pre or not secrets.compare_digest(pre, form.get("csrf", "")):
        return _html(pages.message_page("csrf.refused"), 403)
    user = await asyncio.to_thread(users.authenticate, request.app.state.ws_users,
                                   form.get("user", "")[:64], form.get("password", "")[:256])
    if user is None:
        fresh = secrets.token_urlsafe(24)
        response = _html(pages.login(fresh, "login.failed"), 401)
        response.set_cookie(PRE_COOKIE, fresh, httponly=True, samesite="strict",
                            secure=_secure(request), path="/ws/login")
        return response
    async with _pool(request).acquire() as conn:
        token, _ = await sessions.start(conn, user.principal())
    response = RedirectResponse("/ws/worklist", status_code=303, headers=HEADERS)
    response.set_cookie(sessions.COOKIE, token, httponly=True, samesite="strict",
                        secure=_secure(request), path="/ws")
    response.delete_cookie(PRE_COOKIE, path="/ws/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await _post_session(request)
    async with _pool(request).acquire() as conn:
        await sessions.end(conn, request.cookies.get(sessions.COOKIE))
    response = RedirectResponse("/ws/login", status_code=303, headers=HEADERS)
    response.delete_cookie(sessions.COOKIE, path="/ws", httponly=True, samesite="strict",
                           secure=_secure(request))
    return response


# --- worklist -------------------------------------------------------------------


async def _rows_html(request: Request, found: sessions.Session) -> str:
    p = found.principal
    async with _pool(request).acquire() as conn:
        rows = await conn.fetch(WORKLIST_SQL, p.institution, qualified(p))
        now = await conn.fetchval("SELECT db_now()")
    return pages.worklist_rows(rows, now, found, _names())


@router.get("/worklist")
async def worklist_page(request: Request) -> Response:
    found = await _session(request)
    _reader(found)
    flash = ""
    if request.query_params.get("none") == "1":
        flash = pages.notice("worklist.none_left", "info")
    return _html(pages.worklist(await _rows_html(request, found), found, flash))


@router.get("/worklist/rows")
async def worklist_rows(request: Request) -> Response:
    found = await _session(request, touch=False)
    _reader(found)
    return _html(await _rows_html(request, found))


@router.get("/events")
async def events(request: Request) -> Response:
    found = await _session(request, touch=False)
    _reader(found)
    p = found.principal
    policy = sessions.policy()
    runtime = getattr(request.app.state, "runtime", None)

    async def stream():
        last = None
        loop = asyncio.get_running_loop()
        ends = loop.time() + policy["sse_stream_seconds"]
        yield "retry: 1000\n\n"
        while loop.time() < ends:
            server = getattr(runtime, "_server", None)
            if server is not None and server.should_exit:
                return  # the service is stopping: the browser reconnects elsewhere
            async with _pool(request).acquire() as conn:
                if await sessions.resume(conn, request.cookies.get(sessions.COOKIE),
                                         touch=False) is None:
                    yield "event: ended\ndata: session\n\n"
                    return
                now = await conn.fetchval(FINGERPRINT_SQL, p.institution, qualified(p))
            if now != last:
                if last is not None:
                    yield f"event: worklist\ndata: {now}\n\n"
                else:
                    yield f"event: ready\ndata: {now}\n\n"
                last = now
            await asyncio.sleep(policy["sse_poll_seconds"])

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.post("/claim-next")
async def claim_next(request: Request) -> Response:
    found, _ = await _post_session(request)
    _reader(found)
    p = found.principal
    async with _pool(request).acquire() as conn, conn.transaction():
        item = await worklist.claim_next(conn, p.institution, qualified(p), p.user)
    if item is None:
        return RedirectResponse("/ws/worklist?none=1", status_code=303, headers=HEADERS)
    return RedirectResponse(f"/ws/studies/{item['request_id']}", status_code=303,
                            headers=HEADERS)


# --- a study --------------------------------------------------------------------


STUDY_SQL = """
    SELECT r.*, rec.measurements, rec.data AS recording FROM requests r
      LEFT JOIN recordings rec USING (recording_ref)
     WHERE r.request_id = $1"""


def _valid_id(request_id: str) -> bool:
    return 0 < len(request_id) <= 64 and all(c.isalnum() or c in "-_.:" for c in request_id)


async def _in_scope(conn, request: Request, found: sessions.Session, request_id: str,
                    action: str):
    """The request's row if the reader may see it; None when unknown or out of
    scope (recorded), which the caller answers alike."""
    p = found.principal
    row = await conn.fetchrow(STUDY_SQL, request_id) if _valid_id(request_id) else None
    if row is not None and (row["reading_centre"] != p.institution
                            or row["modality"] not in qualified(p)):
        await conn.execute(
            """INSERT INTO scope_refusals (request_id, user_id, institution, action)
               VALUES ($1, $2, $3, $4)""", request_id, p.user, p.institution, action)
        return None
    return row


def _render_svg(data: bytes) -> str:
    return ecg_svg.render(Recording.from_bytes(data))


async def _study_response(request: Request, found: sessions.Session, request_id: str, *,
                          flash: str = "", status: int = 200) -> Response:
    async with _pool(request).acquire() as conn:
        row = await _in_scope(conn, request, found, request_id, "ws_view")
        if row is None:
            return _html(pages.message_page("missing", found), 404)
        await conn.execute(
            "INSERT INTO ws_audit (user_id, institution, request_id, action) "
            "VALUES ($1, $2, $3, 'view')",
            found.principal.user, found.principal.institution, request_id)
        revisions = await conn.fetch(
            "SELECT * FROM reports WHERE request_id = $1 ORDER BY revision", request_id)
        finding = await conn.fetchrow(
            "SELECT * FROM critical_findings WHERE request_id = $1", request_id)
        previous = await conn.fetch(
            """SELECT request_id, modality, performed_by, reported_at FROM recognitions
                WHERE patient_ref = $1 AND request_id <> $2 AND valid_until > db_now()
                ORDER BY reported_at DESC LIMIT 20""", row["patient_ref"], request_id)
        earlier_ecg = None
        if row["modality"] == "ECG":
            # The patient's previous ECG at this centre: STEMI needs *new* ST elevation.
            earlier_ecg = await conn.fetchrow(
                """SELECT r.request_id, r.requested_at, rec.data FROM requests r
                     JOIN recordings rec USING (recording_ref)
                    WHERE r.patient_ref = $1 AND r.modality = 'ECG' AND r.request_id <> $2
                      AND r.reading_centre = $3 AND r.requested_at < $4
                    ORDER BY r.requested_at DESC LIMIT 1""",
                row["patient_ref"], request_id, row["reading_centre"], row["requested_at"])
    data = dict(row)
    if isinstance(data["measurements"], str):
        data["measurements"] = json.loads(data["measurements"])
    svg = None
    if data["recording"] is not None:
        svg = await asyncio.to_thread(_render_svg, bytes(data["recording"]))
    earlier = None
    if earlier_ecg is not None:
        drawn = await asyncio.to_thread(_render_svg, bytes(earlier_ecg["data"]))
        # Its own ids, so the current tracing's stay unique on the page.
        earlier = (earlier_ecg["request_id"], earlier_ecg["requested_at"],
                   drawn.replace('id="ecg', 'id="prev-ecg'))
    html = pages.study(
        data, found, svg=svg, names=_names(),
        callback=_callbacks().get(row["requesting_institution"]), revisions=list(revisions),
        finding=finding, previous=list(previous), earlier=earlier,
        codes=conclusions.codes_for(row["modality"]), flash=flash)
    return _html(html, status)


@router.get("/studies/{request_id}")
async def study_page(request_id: str, request: Request) -> Response:
    found = await _session(request)
    _reader(found)
    return await _study_response(request, found, request_id)


async def _action(request: Request, request_id: str, action) -> Response:
    """Run an API action for the session's reader; answers as the pages do."""
    found, form = await _post_session(request)
    _reader(found)
    try:
        await _act(request, found.principal, request_id, lambda conn, row: action(
            conn, row, found, form))
    except HTTPException as exc:
        if exc.status_code == 404:
            return _html(pages.message_page("missing", found), 404)
        if exc.status_code == 409:
            return await _study_response(request, found, request_id,
                                         flash=pages.notice("conflict"), status=409)
        if exc.status_code == 422:
            return await _study_response(request, found, request_id,
                                         flash=pages.notice(str(exc.detail)), status=422)
        raise
    return RedirectResponse(f"/ws/studies/{request_id}", status_code=303, headers=HEADERS)


@router.post("/studies/{request_id}/claim")
async def claim(request_id: str, request: Request) -> Response:
    return await _action(request, request_id,
                         lambda conn, row, found, form: worklist.claim(conn, row,
                                                                       found.principal.user))


@router.post("/studies/{request_id}/release")
async def release(request_id: str, request: Request) -> Response:
    response = await _action(
        request, request_id,
        lambda conn, row, found, form: worklist.release(conn, row, found.principal.user))
    if response.status_code == 303:
        return RedirectResponse("/ws/worklist", status_code=303, headers=HEADERS)
    return response


def _report_body(row, form: dict[str, str], *, amend: bool):
    """The API's report body from the form: a critical conclusion sets the
    critical flag, and a critical report needs the reader's confirmation."""
    code = form.get("conclusion", "")
    entry = conclusions.codes_for(row["modality"]).get(code)
    if entry is None:
        raise HTTPException(422, "report.invalid")
    critical = bool(entry["critical"]) or form.get("critical") == "1"
    if critical and form.get("confirm_critical") != "1":
        raise HTTPException(422, "report.confirm_needed")
    fields = dict(findings=form.get("findings", "").strip(),
                  impression=form.get("impression", "").strip(),
                  conclusions=(code,), critical=critical)
    if amend and form.get("reason", "") not in {r.value for r in AmendmentReason}:
        raise HTTPException(422, "report.reason_needed")
    try:
        if amend:
            return reports.AmendBody(**fields, reason=form["reason"])
        return reports.ReportBody(**fields)
    except ValidationError:
        raise HTTPException(422, "report.invalid") from None


@router.post("/studies/{request_id}/report", openapi_extra=FORM_LIMIT)
async def sign(request_id: str, request: Request) -> Response:
    response = await _action(
        request, request_id,
        lambda conn, row, found, form: reports.sign(
            conn, row, _report_body(row, form, amend=False), found.principal.user))
    if response.status_code == 303:
        return RedirectResponse("/ws/worklist", status_code=303, headers=HEADERS)
    return response


@router.post("/studies/{request_id}/amend", openapi_extra=FORM_LIMIT)
async def amend(request_id: str, request: Request) -> Response:
    return await _action(
        request, request_id,
        lambda conn, row, found, form: reports.amend(
            conn, row, _report_body(row, form, amend=True), found.principal.user))


@router.get("/studies/{request_id}/series/{series_uid}/preview")
async def series_preview(request_id: str, series_uid: str, request: Request) -> Response:
    """A rendered image of one of the study's series, fetched from the PACS by the
    service (the browser never talks to the PACS); only a series the request
    recorded, in the reader's scope, and the view is audited."""
    found = await _session(request)
    _reader(found)
    async with _pool(request).acquire() as conn:
        row = await _in_scope(conn, request, found, request_id, "ws_preview")
        study = None if row is None else row["study"]
        if isinstance(study, str):
            study = json.loads(study)
        known = {s.get("series_uid") for s in (study or {}).get("series", [])}
        if row is None or not row["study_instance_uid"] or series_uid not in known:
            raise HTTPException(404, "no such series")
        await conn.execute(
            "INSERT INTO ws_audit (user_id, institution, request_id, action) "
            "VALUES ($1, $2, $3, 'preview')",
            found.principal.user, found.principal.institution, request_id)
    client = imaging._client()
    if client is None:
        raise HTTPException(503, "no PACS configured")
    try:
        preview = await client.series_preview(row["study_instance_uid"], series_uid)
    except PacsUnavailable:
        raise HTTPException(503, "PACS unavailable", headers={"Retry-After": "5"}) from None
    if preview is None:
        raise HTTPException(404, "no such series")
    return Response(preview.content, media_type=preview.media_type,
                    headers={"Cache-Control": "private, max-age=300",
                             "X-Content-Type-Options": "nosniff"})


# --- the supervisor's view ----------------------------------------------------------


@router.get("/supervisor")
async def supervisor_page(request: Request) -> Response:
    found = await _session(request)
    if pages.SUPERVISOR not in found.principal.roles:
        return _html(pages.message_page("forbidden", found), 403)
    centre = found.principal.institution
    async with _pool(request).acquire() as conn:
        now = await conn.fetchval("SELECT db_now()")
        overdue = await conn.fetch(
            """SELECT request_id, modality, priority, due_at, claimed_by, requesting_institution
                 FROM requests WHERE reading_centre = $1 AND status IN ('queued', 'claimed')
                  AND due_at < db_now() ORDER BY due_at""", centre)
        findings = await conn.fetch(
            """SELECT f.* FROM critical_findings f JOIN requests r USING (request_id)
                WHERE r.reading_centre = $1 AND f.acknowledged_at IS NULL
                ORDER BY f.raised_at""", centre)
        claims = await conn.fetch(
            """SELECT claimed_by, count(*) AS n, array_agg(request_id ORDER BY due_at) AS ids
                 FROM requests WHERE reading_centre = $1 AND status = 'claimed'
                GROUP BY claimed_by ORDER BY claimed_by""", centre)
    return _html(pages.supervisor(found, overdue=list(overdue), findings=list(findings),
                                  claims=list(claims), now=now, names=_names(),
                                  ladder=lambda n: critical.step(n)[0]))


# --- static ---------------------------------------------------------------------


@cache
def _static(name: str) -> bytes:
    return (files("yigongti_diagnosis.workstation") / "static" / name).read_bytes()


@router.get("/static/{name}")
async def static(name: str) -> Response:
    types = {"ws.js": "text/javascript", "ws.css": "text/css"}
    if name not in types:
        raise HTTPException(404, "not found")
    return Response(_static(name), media_type=types[name] + "; charset=utf-8",
                    headers={"X-Content-Type-Options": "nosniff"})


# --- mounting -------------------------------------------------------------------


def mount(app: FastAPI) -> None:
    """Add the workstation to the diagnosis service's app."""
    app.state.ws_users = users.load(os.environ.get(users.USERS_ENV))
    app.state.ws_cookie_secure = os.environ.get(SECURE_ENV, "true").lower() != "false"
    app.include_router(router)

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        if request.method == "GET" and not request.url.path.startswith(("/ws/events",
                                                                         "/ws/worklist/rows")):
            return _to_login()
        return _html(pages.message_page("login.expired"), 401)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        return _html(pages.message_page(exc.key), 403)

    del not_signed_in, refused

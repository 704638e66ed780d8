"""HTTP: terminals upload ECG recordings; readers work their centre's worklist
(claim, release, sign, amend); clinics read their requests through the feed."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from yigongti_contracts.common import ID_PATTERN, PATIENT_REF_PATTERN, Identifier
from yigongti_kit.auth import Principal, require_principal, require_roles
from yigongti_kit.feed import feed_router
from yigongti_kit.http_edge import body_limit
from yigongti_kit.http_openapi import roles as callable_by

from . import conclusions, critical, fhir, locking, recording, reports, store, turnaround, worklist
from .measure import AnalysisFailed

READER = "diagnostician"
FHIR_JSON = "application/fhir+json"
CLINIC_ROLES = {"clinician", "clinic_terminal"}
DESCRIPTION = ("Remote diagnosis (远程诊断): township terminals upload 12-lead ECGs "
               "(claim check) and request readings; the county ECG and imaging centres read "
               "from a priority worklist and sign reports; clinics follow their requests "
               "through an institution-scoped feed. Every call carries a bearer token.")
NO_REQUEST = "no such request"
ABSENT = {404: {"description": "No such request, or not the caller's centre's or modality's "
                               "(the same answer; the attempt is recorded)."}}
RequestId = Annotated[str, Path(pattern=ID_PATTERN, max_length=64)]
PatientRefPath = Annotated[str, Path(pattern=PATIENT_REF_PATTERN)]

router = APIRouter()


def qualified(principal: Principal) -> list[str]:
    """The modalities the reader is qualified for: a role `reads_<modality>` each."""
    return [m for m in ("ECG", "DX", "CT", "MR", "US")
            if f"reads_{m.lower()}" in principal.roles]


def _reader(principal: Principal) -> Principal:
    if READER not in principal.roles:
        raise HTTPException(403, f"missing role: {READER}")
    return principal


@router.post("/recordings", tags=["terminal"], status_code=201,
             summary="Upload a 12-lead ECG (DICOM waveform or CSV); answers its reference "
                     "and the automatic measurements",
             openapi_extra={**callable_by("clinic_terminal"),
                            **body_limit(recording.MAX_UPLOAD_BYTES),
                            "requestBody": {"required": True, "content": {
                                recording.MEDIA_DICOM: {"schema": {
                                    "type": "string", "format": "binary"}},
                                recording.MEDIA_CSV: {"schema": {
                                    "type": "string",
                                    "description": "yigongti-ecg-csv/1 (recording.py)"}}}}},
             responses={422: {"description": "The recording is refused: `detail[0].type` is "
                                             "the reason (too_large, unsupported_format, "
                                             "unreadable, missing_lead, "
                                             "sample_rate_out_of_range, duration_out_of_range, "
                                             "unsupported_units, unknown_field…) and "
                                             "`detail[0].loc` the field; never a value."}})
async def upload_recording(request: Request,
                           principal: Principal = Depends(require_roles("clinic_terminal"))
                           ) -> dict:
    body = await request.body()
    media_type = request.headers.get("content-type", "")
    try:
        # Parsing is CPU work with pydicom/numpy: off the event loop.
        parsed = await asyncio.to_thread(recording.parse, body, media_type)
    except recording.RecordingRefused as exc:
        # The edge's 422 shape: the field's path and the reason code as its type.
        raise HTTPException(422, [{"loc": ["body", exc.field], "type": exc.code}]) from None
    stored = parsed.to_bytes()
    async with request.app.state.pool.acquire() as conn:
        measurements = await store.measured_before(conn, stored)
    error = None
    analyser = getattr(request.app.state, "analyser", None)
    if measurements is None and analyser is not None:
        try:
            measurements = (await analyser.measure(parsed)).to_dict()
        except AnalysisFailed as exc:
            error = exc.reason
    async with request.app.state.pool.acquire() as conn:
        ref = await store.store_recording(
            conn, institution=principal.institution, user=principal.user,
            data=stored, metadata=parsed.metadata(), duration_s=parsed.duration_s,
            measurements=measurements, measure_error=error)
    return {"recording_ref": ref, "sample_rate_hz": parsed.sample_rate_hz,
            "duration_s": round(parsed.duration_s, 3), "label": parsed.label,
            "measurements": measurements, "measurement_error": error}


@router.get("/worklist", tags=["reading centre"],
            summary="The centre's worklist: queued and claimed studies, by priority then due time",
            openapi_extra=callable_by(READER))
async def get_worklist(request: Request, principal: Principal = Depends(require_principal)
                       ) -> dict:
    _reader(principal)
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(store.WORKLIST, principal.institution, 500)
    modalities = set(qualified(principal))
    return {"reading_centre": principal.institution,
            "items": [store.item(r) for r in rows if r["modality"] in modalities]}


@router.post("/worklist/claim-next", tags=["reading centre"],
             summary="Claim the first queued study the reader is qualified for (15-minute lease)",
             openapi_extra=callable_by(READER))
async def claim_next(request: Request, principal: Principal = Depends(require_principal)
                     ) -> dict:
    _reader(principal)
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        item = await worklist.claim_next(conn, principal.institution, qualified(principal),
                                         principal.user)
    return {"claimed": item}


async def _act(request: Request, principal: Principal, request_id: str, action):
    """Run `action(conn, row)` on the request's locked row if it is in the reader's
    scope (centre and modality); else 404 as for a missing one, and recorded."""
    _reader(principal)
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        row = await locking.lock_request(conn, request_id)
        if row is not None and (row["reading_centre"] != principal.institution
                                or row["modality"] not in qualified(principal)):
            await conn.execute(
                """INSERT INTO scope_refusals (request_id, user_id, institution, action)
                   VALUES ($1, $2, $3, $4)""",
                request_id, principal.user, principal.institution, request.url.path[-40:])
        elif row is not None:
            try:
                return await action(conn, row)
            except (worklist.ClaimConflict, reports.ReportConflict,
                    critical.CriticalConflict) as exc:
                raise HTTPException(409, str(exc)) from None
            except conclusions.UnknownConclusion as exc:
                raise HTTPException(422, str(exc)) from None
    raise HTTPException(404, NO_REQUEST)


CONFLICT = {409: {"description": "The study is not in the state the action needs."}}


@router.post("/requests/{request_id}/claim", tags=["reading centre"],
             summary="Claim a chosen study (15-minute lease)",
             openapi_extra=callable_by(READER), responses={**ABSENT, **CONFLICT})
async def claim(request_id: RequestId, request: Request,
                principal: Principal = Depends(require_principal)) -> dict:
    return await _act(request, principal, request_id,
                      lambda conn, row: worklist.claim(conn, row, principal.user))


@router.post("/requests/{request_id}/release", tags=["reading centre"],
             summary="Give a claimed study back to the worklist",
             openapi_extra=callable_by(READER), responses={**ABSENT, **CONFLICT})
async def release(request_id: RequestId, request: Request,
                  principal: Principal = Depends(require_principal)) -> dict:
    return await _act(request, principal, request_id,
                      lambda conn, row: worklist.release(conn, row, principal.user))


@router.post("/requests/{request_id}/report", tags=["reading centre"],
             summary="Sign the report of a claimed study (final); raises a critical finding",
             openapi_extra=callable_by(READER), responses={**ABSENT, **CONFLICT})
async def sign(request_id: RequestId, body: reports.ReportBody, request: Request,
               principal: Principal = Depends(require_principal)) -> dict:
    return await _act(request, principal, request_id,
                      lambda conn, row: reports.sign(conn, row, body, principal.user))


@router.post("/requests/{request_id}/amend", tags=["reading centre"],
             summary="Amend a signed report: a new revision, the original kept",
             openapi_extra=callable_by(READER), responses={**ABSENT, **CONFLICT})
async def amend(request_id: RequestId, body: reports.AmendBody, request: Request,
                principal: Principal = Depends(require_principal)) -> dict:
    return await _act(request, principal, request_id,
                      lambda conn, row: reports.amend(conn, row, body, principal.user))


async def _readable(conn, principal: Principal, request_id: str):
    """The request's row if the caller may read it (its centre's readers, its
    institution's clinicians), else 404 as for a missing one."""
    roles = set(principal.roles)
    if not roles & (CLINIC_ROLES | {READER}):
        raise HTTPException(403, "missing role: diagnostician or clinician")
    row = await conn.fetchrow(
        """SELECT r.*, rec.measurements, rec.measure_error FROM requests r
             LEFT JOIN recordings rec USING (recording_ref)
            WHERE r.request_id = $1
              AND (($3 AND r.reading_centre = $2) OR ($4 AND r.requesting_institution = $2))""",
        request_id, principal.institution, READER in roles, bool(roles & CLINIC_ROLES))
    if row is None:
        raise HTTPException(404, NO_REQUEST)
    return row


@router.get("/requests/{request_id}/fhir", tags=["reading centre", "clinic"],
            response_class=JSONResponse,
            openapi_extra=callable_by(READER, "clinician", "clinic_terminal"),
            responses={200: {"content": {FHIR_JSON: {}},
                             "description": "A FHIR R4 Bundle (collection)"}, **ABSENT},
            summary="The request as HL7 FHIR R4: ServiceRequest, Task, ImagingStudy, the "
                    "measurements' Observations, DiagnosticReports and the critical finding")
async def get_request_fhir(request_id: RequestId, request: Request,
                           principal: Principal = Depends(require_principal)) -> Response:
    async with request.app.state.pool.acquire() as conn:
        row = await _readable(conn, principal, request_id)
        revisions = await conn.fetch(
            "SELECT * FROM reports WHERE request_id = $1 ORDER BY revision", request_id)
        finding = await conn.fetchrow(
            "SELECT * FROM critical_findings WHERE request_id = $1", request_id)
    r = dict(row)
    for key in ("study", "measurements"):
        if isinstance(r.get(key), str):
            r[key] = json.loads(r[key])
    bundle = fhir.request_bundle(r, r.get("measurements"), [dict(v) for v in revisions],
                                 dict(finding) if finding else None)
    return Response(fhir.f.dumps(bundle), media_type=FHIR_JSON)


@router.get("/requests/{request_id}", tags=["reading centre", "clinic"],
            summary="A request with its measurements and report revisions",
            openapi_extra=callable_by(READER, "clinician", "clinic_terminal"),
            responses=ABSENT)
async def get_request(request_id: RequestId, request: Request,
                      principal: Principal = Depends(require_principal)) -> dict:
    async with request.app.state.pool.acquire() as conn:
        row = await _readable(conn, principal, request_id)
        revisions = await conn.fetch(
            "SELECT * FROM reports WHERE request_id = $1 ORDER BY revision", request_id)
    out = store.item(row)
    out["revisions"] = [store.item(r) for r in revisions]
    return out


@router.get("/patients/{patient_ref}/recognised-studies", tags=["clinic", "reading centre"],
            summary="A patient's recognised examinations (互认), valid now",
            openapi_extra=callable_by(READER, "clinician", "clinic_terminal"),
            responses={404: {"description": "No request of the caller's for this patient "
                                            "(the same answer as an unknown patient)."}})
async def recognised(patient_ref: PatientRefPath, request: Request,
                     principal: Principal = Depends(require_principal)) -> dict:
    roles = set(principal.roles)
    async with request.app.state.pool.acquire() as conn:
        if not await conn.fetchval(
                """SELECT true FROM requests WHERE patient_ref = $1
                     AND (($3 AND reading_centre = $2) OR ($4 AND requesting_institution = $2))
                   LIMIT 1""", patient_ref, principal.institution, READER in roles,
                bool(roles & CLINIC_ROLES)):
            raise HTTPException(404, "no such patient")
        rows = await conn.fetch(
            """SELECT recognition_id, request_id, modality, performed_by, study_instance_uid,
                      recording_ref, reported_at, valid_until, supersedes
                 FROM recognitions WHERE patient_ref = $1 AND valid_until > db_now()
                ORDER BY reported_at""", patient_ref)
    return {"patient_ref": patient_ref, "studies": [store.item(r) for r in rows]}


@router.get("/turnaround", tags=["reading centre"],
            summary="Turnaround per stage for the caller's centre (requested → queued → "
                    "claimed → reported → acknowledged; chest-pain centre measures)",
            openapi_extra=callable_by(READER))
async def get_turnaround(request: Request, days: int = Query(30, ge=1, le=366),
                         principal: Principal = Depends(require_principal)) -> dict:
    _reader(principal)
    async with request.app.state.pool.acquire() as conn:
        return await turnaround.per_centre(conn, principal.institution, days)


class CallBackBody(BaseModel):
    """A phone call to the requesting clinic about a critical finding: who
    answered, and whether they read the finding back."""

    model_config = ConfigDict(extra="forbid")

    reached: Identifier | None = None
    read_back_confirmed: bool


@router.post("/requests/{request_id}/critical-finding/call-backs", tags=["reading centre"],
             summary="Record a call-back to the clinic; a confirmed read-back stops the clock",
             openapi_extra=callable_by(READER), responses={**ABSENT, **CONFLICT})
async def call_back(request_id: RequestId, body: CallBackBody, request: Request,
                    principal: Principal = Depends(require_principal)) -> dict:
    return await _act(request, principal, request_id, lambda conn, row: critical.call_back(
        conn, row, called_by=principal.user, reached=body.reached,
        read_back=body.read_back_confirmed))


FEED = feed_router(
    roles=CLINIC_ROLES, aggregate_field="request_id",
    openapi_extra=callable_by("clinician", "clinic_terminal"),
    description="Events about the caller's institution's requests (queued, withdrawn, "
    "reported, amended, critical findings and their acknowledgement, charges, recognition, "
    "intake rejections), oldest first after the cursor `after`; `next` is the cursor for the "
    "next call. Claims, releases, overdue and escalation steps stay inside the centre.")


def add_routes(app: FastAPI) -> None:
    app.description = DESCRIPTION
    app.include_router(FEED)
    app.include_router(router)




"""The coordinators' HTTP API (issue 12 item 8): incoming and outgoing
referrals with their state, deadline and chain; accept or decline (with an
alternative); departure, arrival, discharge and follow-up; cancel; follow-ups
due; the attached recognised results; a FHIR Bundle per referral; leakage
metrics; the feed. Every call carries a bearer token and is scoped to the
caller's institution: a referral another institution's is answered as
absent (404), and an end that may not record an action gets 403.

An action goes through the same state machine as intake (transitions.run):
refused → 409 with the reason code; parked (e.g. an arrival before a routine
referral's acceptance) → 202."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError
from yigongti_contracts.common import ID_PATTERN, InstitutionId, UtcDateTime
from yigongti_kit import timers
from yigongti_kit.auth import Principal, require_principal
from yigongti_kit.feed import feed_router
from yigongti_kit.http_edge import body_limit
from yigongti_kit.http_openapi import roles as callable_by

from . import facts, fhir, store, transitions
from .codes import (
    CancelReason,
    CaseState,
    ClosureOutcome,
    Decision,
    DeclineReason,
    FollowUpFinding,
)

COORDINATOR = "referral_coordinator"
CLINIC_ROLES = {"clinician", "clinic_terminal"}
READERS = {COORDINATOR, *CLINIC_ROLES}
FHIR_JSON = "application/fhir+json"
DESCRIPTION = ("Two-way referral (双向转诊): referral coordinators and clinics see their "
               "institution's incoming and outgoing referrals, accept or decline them, "
               "record departure, arrival, discharge and follow-up rounds; the receiver "
               "reads the recognised results attached. Every call carries a bearer token "
               "(user, institution, roles).")

ReferralIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="A referral id.")]
ANY_READER = callable_by(*sorted(READERS))
ABSENT = {404: {"description": "No such referral, or not one of the caller's institution "
                               "(the same answer)."}}
ACTION = {**ABSENT,
          202: {"description": "Recorded and parked: it waits for what it depends on."},
          403: {"description": "The caller's institution is not the end that records this "
                               "(forbidden_institution), or a role is missing."},
          409: {"description": "Refused by the referral's state: `detail` is the reason code "
                               "(contracts referral/rejections.py)."}}
NO_REFERRAL = "no such referral"

router = APIRouter(tags=["referrals"])


def _role(principal: Principal, allowed: set[str]) -> None:
    if not set(principal.roles) & allowed:
        raise HTTPException(403, "missing role: " + " or ".join(sorted(allowed)))


async def _visible(conn, principal: Principal, referral_id: str):
    row = await store.visible(conn, referral_id, principal.institution)
    if row is None:
        raise HTTPException(404, NO_REFERRAL)
    return row


@router.get("/referrals", summary="The institution's incoming or outgoing referrals",
            openapi_extra=ANY_READER)
async def list_referrals(
        request: Request,
        side: Annotated[str, Query(pattern="^(incoming|outgoing)$")] = "incoming",
        state: CaseState | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        principal: Principal = Depends(require_principal)) -> dict:
    _role(principal, READERS)
    async with request.app.state.pool.acquire() as conn:
        rows = await store.listing(conn, principal.institution, side=side,
                                   state=state and state.value, limit=limit)
    return {"side": side, "referrals": rows}


@router.get("/referrals/{referral_id}", summary="A referral: state, deadline and its chain",
            openapi_extra=ANY_READER, responses=ABSENT)
async def get_referral(referral_id: ReferralIdPath, request: Request,
                       principal: Principal = Depends(require_principal)) -> dict:
    _role(principal, READERS)
    async with request.app.state.pool.acquire() as conn:
        row = await _visible(conn, principal, referral_id)
        out = store.view(row)
        out["chain"] = await store.chain(conn, row["root_referral_id"] or referral_id)
    return out


@router.get("/referrals/{referral_id}/attachments",
            summary="The recognised results and studies attached to a referral",
            description="The references the request named, and the patient's recognised "
            "results and studies valid when it was opened, with the values from the lab's "
            "verified reports: the receiver cannot read the lab's or the diagnosis "
            "service's HTTP, so referral serves them to both ends.",
            openapi_extra=ANY_READER, responses=ABSENT)
async def attachments(referral_id: ReferralIdPath, request: Request,
                      principal: Principal = Depends(require_principal)) -> dict:
    _role(principal, READERS)
    async with request.app.state.pool.acquire() as conn:
        row = await _visible(conn, principal, referral_id)
        named = store.view(row)["attached_results"]
        rows = await conn.fetch(
            """SELECT ref, kind, performed_by, recognised_at, valid_until, detail
                 FROM recognised
                WHERE (ref = ANY($1::text[]))
                   OR (patient_ref = $2 AND superseded_by IS NULL
                       AND recognised_at <= $3 AND valid_until > $3)
                ORDER BY recognised_at, ref""",
            named, row["patient_ref"], row["opened_at"])
    found = {r["ref"] for r in rows}
    return {"referral_id": referral_id,
            "results": [{"ref": r["ref"], "kind": r["kind"], "performed_by": r["performed_by"],
                         "recognised_at": r["recognised_at"].isoformat(),
                         "valid_until": r["valid_until"].isoformat(),
                         "named_by_request": r["ref"] in named,
                         **store._json(r["detail"])} for r in rows],
            "unknown_refs": [ref for ref in named if ref not in found]}


# --- actions -----------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _iso_string(value: Any) -> Any:
    if not isinstance(value, str):
        raise PydanticCustomError("datetime_string", "an ISO 8601 date-time string")
    return value


# A time is an ISO 8601 string with its offset, never a number of seconds (as
# the document says: the schema's type is string).
IsoTime = Annotated[UtcDateTime, BeforeValidator(_iso_string)]


class DeclineBody(_Body):
    reason: DeclineReason
    alternative_institution: InstitutionId | None = None


class AtBody(_Body):
    at: IsoTime | None = Field(default=None, description="When; default: now.")


# The longest summary, every character written as a JSON surrogate pair (12 bytes),
# fits: a body within the model's limits is never refused for its size.
SUMMARY_MAX_CHARS = 20000
SUMMARY_BODY_LIMIT = 12 * SUMMARY_MAX_CHARS + 4096


class DischargeBody(_Body):
    outcome: ClosureOutcome
    summary: Annotated[str, StringConstraints(min_length=1, max_length=SUMMARY_MAX_CHARS)] = Field(
        description="The discharge summary; it stays in the service, events carry its id.")
    discharged_at: IsoTime | None = None


class FollowUpBody(_Body):
    finding: FollowUpFinding
    seen_at: IsoTime | None = None


class CancelBody(_Body):
    reason: CancelReason


async def _act(request: Request, principal: Principal, referral_id: str, make,
               before=None) -> JSONResponse:
    """Run the fact `make(now)` against the referral under its lock; answer."""
    _role(principal, READERS)
    fact_id = str(uuid.uuid4())
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        await _visible(conn, principal, referral_id)
        now = await timers.db_now(conn)
        fact = make(now)
        if before is not None:
            await before(conn, fact)
        try:
            outcome = await transitions.run(conn, fact, fact_id=fact_id,
                                            sender=principal.institution)
        except transitions.Refused as exc:
            status = 403 if exc.reason == "forbidden_institution" else 409
            raise HTTPException(status, exc.reason) from None
    case = outcome.case
    parked = case is not None and any(p.fact_id == fact_id for p in case.parked)
    return JSONResponse(status_code=202 if parked else 200, content={
        "referral_id": referral_id, "parked": parked,
        "state": case.state.value if case and case.state else None,
        "events": [type(e).__name__ for e in outcome.events]})


def _when(at: datetime | None, now: datetime) -> datetime:
    return at or now


@router.post("/referrals/{referral_id}/accept", summary="Accept a referral (the receiver)",
             openapi_extra=ANY_READER, responses=ACTION)
async def accept(referral_id: ReferralIdPath, request: Request,
                 principal: Principal = Depends(require_principal)) -> JSONResponse:
    return await _act(request, principal, referral_id, lambda now: facts.ReferralDecision(
        referral_id, Decision.accept, principal.user, now))


@router.post("/referrals/{referral_id}/decline",
             summary="Decline a referral with a reason, and perhaps an alternative",
             openapi_extra=ANY_READER, responses=ACTION)
async def decline(referral_id: ReferralIdPath, body: DeclineBody, request: Request,
                  principal: Principal = Depends(require_principal)) -> JSONResponse:
    return await _act(request, principal, referral_id, lambda now: facts.ReferralDecision(
        referral_id, Decision.decline, principal.user, now, body.reason,
        body.alternative_institution))


@router.post("/referrals/{referral_id}/departure", summary="The patient left (the sender)",
             openapi_extra=ANY_READER, responses=ACTION)
async def departure(referral_id: ReferralIdPath, body: AtBody, request: Request,
                    principal: Principal = Depends(require_principal)) -> JSONResponse:
    return await _act(request, principal, referral_id,
                      lambda now: facts.PatientDeparted(referral_id, _when(body.at, now)))


@router.post("/referrals/{referral_id}/arrival", summary="The patient arrived (the receiver)",
             openapi_extra=ANY_READER, responses=ACTION)
async def arrival(referral_id: ReferralIdPath, body: AtBody, request: Request,
                  principal: Principal = Depends(require_principal)) -> JSONResponse:
    return await _act(request, principal, referral_id,
                      lambda now: facts.PatientArrived(referral_id, _when(body.at, now)))


@router.post("/referrals/{referral_id}/discharge",
             summary="Close an upward referral with the outcome and the discharge summary",
             openapi_extra=ANY_READER | body_limit(SUMMARY_BODY_LIMIT), responses=ACTION)
async def discharge(referral_id: ReferralIdPath, body: DischargeBody, request: Request,
                    principal: Principal = Depends(require_principal)) -> JSONResponse:
    summary_id = f"DS-{uuid.uuid4().hex[:20]}"

    async def keep_summary(conn, fact) -> None:
        await conn.execute(
            """INSERT INTO discharge_summaries (summary_id, referral_id, text, submitted_by)
               VALUES ($1, $2, $3, $4)""", summary_id, referral_id, body.summary,
            principal.user)

    return await _act(request, principal, referral_id,
                      lambda now: facts.DischargeSummarySubmitted(
                          referral_id, summary_id, body.outcome,
                          _when(body.discharged_at, now)), keep_summary)


@router.post("/referrals/{referral_id}/follow-ups/{round_day}",
             summary="Record a follow-up round of a downward referral (the township)",
             openapi_extra=ANY_READER, responses=ACTION)
async def follow_up(referral_id: ReferralIdPath,
                    round_day: Annotated[int, Path(ge=1, le=365)], body: FollowUpBody,
                    request: Request,
                    principal: Principal = Depends(require_principal)) -> JSONResponse:
    return await _act(request, principal, referral_id, lambda now: facts.FollowUpRecorded(
        referral_id, round_day, body.finding, _when(body.seen_at, now)))


@router.post("/referrals/{referral_id}/cancel", summary="Withdraw a referral (the sender)",
             openapi_extra=ANY_READER, responses=ACTION)
async def cancel(referral_id: ReferralIdPath, body: CancelBody, request: Request,
                 principal: Principal = Depends(require_principal)) -> JSONResponse:
    return await _act(request, principal, referral_id, lambda now: facts.ReferralCancelled(
        referral_id, body.reason, now))


@router.get("/referrals/{referral_id}/discharge-summary",
            summary="The discharge summary of an upward referral (both ends)",
            openapi_extra=ANY_READER, responses=ABSENT)
async def discharge_summary(referral_id: ReferralIdPath, request: Request,
                            principal: Principal = Depends(require_principal)) -> dict:
    _role(principal, READERS)
    async with request.app.state.pool.acquire() as conn:
        row = await _visible(conn, principal, referral_id)
        summary_id = store.view(row)["discharge_summary_id"]
        text = summary_id and await conn.fetchval(
            "SELECT text FROM discharge_summaries WHERE summary_id = $1", summary_id)
    if not text:
        raise HTTPException(404, "no discharge summary")
    return {"referral_id": referral_id, "summary_id": summary_id, "summary": text}


@router.get("/follow-ups/due", summary="Follow-up rounds the institution owes",
            openapi_extra=ANY_READER)
async def follow_ups_due(request: Request,
                         principal: Principal = Depends(require_principal)) -> dict:
    _role(principal, READERS)
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT referral_id, patient_ref, from_institution, data->'rounds' AS rounds
                 FROM cases WHERE to_institution = $1 AND direction = 'down'
                  AND state = 'closed'""", principal.institution)
    due = [{"referral_id": r["referral_id"], "patient_ref": r["patient_ref"],
            "handed_over_from": r["from_institution"], **rnd}
           for r in rows for rnd in store._json(r["rounds"]) if rnd["state"] != "done"]
    return {"follow_ups": sorted(due, key=lambda d: d["due_at"])}


@router.get("/referral-metrics", summary="Leakage and quality metrics of the institution",
            description="As sender and as receiver: referrals never received, received but "
            "never closed, follow-ups missed; median acceptance time and finding → "
            "suggestion time.", openapi_extra=ANY_READER)
async def referral_metrics(request: Request,
                           principal: Principal = Depends(require_principal)) -> dict:
    _role(principal, READERS)
    async with request.app.state.pool.acquire() as conn:
        return await store.metrics(conn, principal.institution)


@router.get("/referrals/{referral_id}/fhir", response_class=JSONResponse,
            openapi_extra=ANY_READER,
            responses={200: {"content": {FHIR_JSON: {}},
                             "description": "A FHIR R4 Bundle (collection)"}, **ABSENT},
            summary="The referral as HL7 FHIR R4: ServiceRequest and Task (BSeR statuses)")
async def get_fhir(referral_id: ReferralIdPath, request: Request,
                   principal: Principal = Depends(require_principal)) -> Response:
    _role(principal, READERS)
    async with request.app.state.pool.acquire() as conn:
        row = await _visible(conn, principal, referral_id)
    return Response(fhir.dumps(fhir.referral_bundle(store.load_case(store._json(row["data"])))),
                    media_type=FHIR_JSON)


FEED = feed_router(
    roles=READERS, aggregate_field="referral_id",
    openapi_extra=ANY_READER,
    description="Events about the caller's institution's referrals, as sender or receiver "
    "(opened, accepted, declined, expired, re-route proposals, transit, arrival, closure "
    "with its outcome, lost, follow-ups), suggestions from critical findings, lab critical "
    "values forwarded to the receiver of a patient in transit (for information: only the "
    "ordering institution's acknowledgement stops the lab's clock), and intake rejections; "
    "oldest first after the cursor `after`; `next` is the cursor for the next call. Its "
    "items name the aggregate as `referral_id` (a suggestion's is its suggestion_id).")


def add_routes(app: FastAPI) -> None:
    app.description = DESCRIPTION
    app.include_router(FEED)
    app.include_router(router)



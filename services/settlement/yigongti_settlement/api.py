"""HTTP: the counter's terminal (look-up, identity, pre-check, settle, query,
reverse), the insurance office (persons, settlements, flags, decisions,
alerts, safety-net grants) and the clinics' feed. Every call carries a
bearer token (user, institution, roles); the terminal's token user is the
terminal id. ID numbers and card serials arrive only here, in bodies, and
are never logged, stored in clear or echoed."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from yigongti_contracts.common import Identifier, Money, PatientRef
from yigongti_contracts.fhir import dumps as fhir_dumps
from yigongti_contracts.settlement.codes import (
    AssistanceCategory,
    AuditDecision,
    CareSetting,
    CredentialType,
    DecisionReason,
    OutBizNo,
    RegionCode,
    ReversalReason,
    Scheme,
    SettlementMode,
    settlement_id_of,
)
from yigongti_contracts.settlement.v1 import (
    AuditDecisionRecorded,
    BillLine,
    SafetyNetAssistanceGranted,
    SettlementRequested,
    SettlementReversalRequested,
    Stay,
)
from yigongti_kit.auth import Principal, require_roles
from yigongti_kit.feed import feed_router
from yigongti_kit.http_openapi import roles as callable_by

from . import config, fhir, handlers, identity, locking, payers, persons, supervision
from .benefits import policy_by_version
from .events import emit_all
from .explanation import explain_safety_net

TERMINAL = "settlement_terminal"
OFFICE = "insurance_office"
DESCRIPTION = ("Face-scan insurance settlement (刷脸结算, 三重保障 一站式结算): identity "
               "without storing faces, the three payers in one stop, the fund watched. "
               "Every call carries a bearer token (user, institution, roles).")
IdText = Annotated[str, StringConstraints(min_length=1, max_length=40)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LookupBody(_Body):
    id_number: IdText = Field(description="The national ID (18 or 15 characters); never stored "
                                          "in clear, never logged.")
    visit_id: Identifier


class VerifyBody(_Body):
    out_biz_no: OutBizNo
    visit_id: Identifier
    credential_type: Literal["face", "qr_voucher", "card", "id_number"]
    credential: dict[str, Any] = Field(
        description="face / qr_voucher: {payload, signature} signed by the issuer "
                    "(contracts/yigongti_contracts/settlement/credentials.py); "
                    "id_number: {id_number}; card: {id_number, card_sn}.")


class SettleBody(_Body):
    out_biz_no: OutBizNo
    visit_id: Identifier
    settlement_token: Annotated[str, StringConstraints(min_length=10, max_length=80)]
    setting: CareSetting
    mode: SettlementMode = SettlementMode.counter
    lines: tuple[BillLine, ...] = Field(default=(), max_length=500)
    posted_charges: bool = False
    stay: Stay | None = None


class PrecheckBody(_Body):
    patient_ref: PatientRef
    lines: tuple[BillLine, ...] = Field(min_length=1, max_length=500)


class ReverseBody(_Body):
    reason: ReversalReason


class EnrolBody(_Body):
    id_number: IdText
    scheme: Scheme
    assistance: AssistanceCategory = AssistanceCategory.none
    region: RegionCode
    ec_index_no: Identifier | None = None
    card_sn: IdText | None = None
    formerly_poor: bool = False
    died_on: date | None = None


class DecisionBody(_Body):
    decision: AuditDecision
    reason: DecisionReason


class GrantBody(_Body):
    amount: Money


router = APIRouter()
ON_TERMINAL = callable_by(TERMINAL)
ON_OFFICE = callable_by(OFFICE)


def _refused(code: str, status: int = 422, fields=()) -> JSONResponse:
    return JSONResponse({"detail": code, "fields": [list(f) for f in fields]}, status_code=status)


@router.post("/patients/lookup", tags=["terminal"], openapi_extra=ON_TERMINAL,
             summary="The patient_ref of an insured person, by ID number",
             responses={404: {"description": "No match (an invalid and an unenrolled ID get "
                                             "the same answer)."},
                        429: {"description": "Too many look-ups from this terminal."}})
async def lookup(body: LookupBody, request: Request,
                 principal: Principal = Depends(require_roles(TERMINAL))) -> dict:
    settings, keys = config.current()
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        try:
            ref = await persons.lookup(conn, keys, national_id=body.id_number,
                                       terminal_id=principal.user,
                                       institution=principal.institution,
                                       visit_id=body.visit_id,
                                       limit_per_minute=settings.lookup_limit_per_minute)
        except persons.RateLimited:
            raise HTTPException(429, "too many look-ups", headers={"Retry-After": "60"}) from None
    if ref is None:
        raise HTTPException(404, "no match")
    return {"patient_ref": ref}


@router.post("/identity/verify", tags=["terminal"], openapi_extra=ON_TERMINAL,
             summary="Check a face result, voucher, card or ID; a single-use settlement token",
             responses={403: {"description": "Refused (reason code); an IdentityRejected."}})
async def verify(body: VerifyBody, request: Request,
                 principal: Principal = Depends(require_roles(TERMINAL))):
    _, keys = config.current()
    req = identity.VerifyRequest(body.out_biz_no, body.visit_id,
                                 CredentialType(body.credential_type), body.credential)
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        answer = await identity.verify(conn, keys, req, institution=principal.institution,
                                       caller_terminal=principal.user)
    if answer["status"] != "verified":
        return JSONResponse(answer, status_code=409 if answer["reason"] == "out_biz_no_reused"
                            else 403)
    return answer


@router.post("/settlements", tags=["terminal"], openapi_extra=ON_TERMINAL,
             summary="Settle (national 2207): the three payers' breakdown and its explanation",
             responses={409: {"description": "outBizNo reused with another request."},
                        422: {"description": "Refused: reason code."}})
async def settle(body: SettleBody, request: Request,
                 principal: Principal = Depends(require_roles(TERMINAL))):
    settlement_id = settlement_id_of(principal.institution, body.out_biz_no)
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        await locking.lock_settlement(conn, settlement_id)
        stored = await conn.fetchval("SELECT answer FROM settlements WHERE settlement_id = $1",
                                     settlement_id)
        if stored is not None:  # a retry: the same answer, the token not needed again
            return JSONResponse(stored)
        checked = await identity.redeem(conn, body.settlement_token)
        if checked is None:
            return _refused("token_invalid", 403)
        try:
            req = SettlementRequested(
                out_biz_no=body.out_biz_no, institution=principal.institution,
                visit_id=body.visit_id, identity_id=checked["identity_id"],
                setting=body.setting, mode=body.mode, lines=body.lines,
                posted_charges=body.posted_charges, stay=body.stay, operator_id=principal.user,
                requested_at=datetime.now(UTC))
        except ValueError as exc:
            return _refused("schema_violation", 422, [("body", str(exc).split("\n")[0][:60]
                                                       .replace(" ", "_").lower()[:20])])
        # A refusal raises out of the transaction: all is rolled back, the
        # token stays usable.
        try:
            return JSONResponse(await handlers.settle_new(conn, req, checked))
        except handlers.Refused as refused:
            raise _Refusal(refused) from None


class _Refusal(Exception):
    def __init__(self, refused: handlers.Refused) -> None:
        self.refused = refused


async def _on_refusal(request: Request, exc: _Refusal) -> JSONResponse:
    r = exc.refused
    return _refused(r.code, 409 if r.code == "out_biz_no_reused" else 422, r.fields)


@router.get("/settlements/{out_biz_no}", tags=["terminal"], openapi_extra=ON_TERMINAL,
            summary="A settlement by the counter's outBizNo (after a time-out: query, then "
                    "reverse)", responses={404: {"description": "No such settlement here."}})
async def query(out_biz_no: OutBizNo, request: Request,
                principal: Principal = Depends(require_roles(TERMINAL))) -> dict:
    async with request.app.state.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT answer, status, reversed_at FROM settlements WHERE settlement_id = $1",
            settlement_id_of(principal.institution, out_biz_no))
    if row is None:
        raise HTTPException(404, "no such settlement")
    answer = (row["answer"])
    answer["status"] = row["status"]
    return answer


@router.post("/settlements/{out_biz_no}/reversal", tags=["terminal"], openapi_extra=ON_TERMINAL,
             summary="Reverse (冲正) a completed settlement; the accumulators are restored",
             responses={422: {"description": "Refused: unknown_settlement, not_latest."}})
async def reverse(out_biz_no: OutBizNo, body: ReverseBody, request: Request,
                  principal: Principal = Depends(require_roles(TERMINAL))):
    req = SettlementReversalRequested(
        settlement_id=settlement_id_of(principal.institution, out_biz_no),
        institution=principal.institution, reason=body.reason, operator_id=principal.user,
        requested_at=datetime.now(UTC))
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        try:
            return await handlers.reverse(conn, req, sender_institution=principal.institution)
        except handlers.Refused as refused:
            raise _Refusal(refused) from None


@router.post("/precheck", tags=["terminal"], openapi_extra=ON_TERMINAL,
             summary="事前提醒: the audit rules an itemised bill would trip")
async def precheck(body: PrecheckBody, request: Request,
                   principal: Principal = Depends(require_roles(TERMINAL))) -> dict:
    async with request.app.state.pool.acquire() as conn:
        person_id = await persons.person_by_ref(conn, body.patient_ref)
        if person_id is None:
            raise HTTPException(404, "no such patient")
        person = await conn.fetchrow("SELECT sex, died_on FROM persons WHERE person_id = $1",
                                     person_id)
        history = [supervision.ServiceItem(r["item_code"], r["service_date"], r["quantity"])
                   for r in await conn.fetch(
                       "SELECT item_code, service_date, quantity FROM settled_items "
                       "WHERE person_id = $1", person_id)]
    from yigongti_contracts.common import Sex
    hits = supervision.bill_hits(
        [supervision.ServiceItem(line.item_code, line.served_at.date(), line.quantity)
         for line in body.lines],
        sex=Sex(person["sex"]), died_on=person["died_on"], presented_on=date.today(),
        history=history)
    return {"hits": [{"rule_id": h.rule_id, "grade": h.grade.value, "stage": h.stage.value,
                      "evidence": h.facts()} for h in hits],
            "would_refuse": supervision.refuses(hits)}


@router.get("/settlements/{out_biz_no}/fhir", tags=["terminal"], openapi_extra=ON_TERMINAL,
            summary="The settlement as FHIR R4 (Coverage ×3, Claim, ClaimResponse)",
            responses={404: {"description": "No completed settlement here."}})
async def settlement_fhir(out_biz_no: OutBizNo, request: Request,
                          principal: Principal = Depends(require_roles(TERMINAL))):
    async with request.app.state.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT * FROM settlements WHERE settlement_id = $1 AND status <> 'rejected'",
            settlement_id_of(principal.institution, out_biz_no))
    if row is None:
        raise HTTPException(404, "no such settlement")
    bundle = fhir.settlement_bundle(row)
    return Response(fhir_dumps(bundle), media_type="application/fhir+json")


# --- the insurance office -----------------------------------------------------------


@router.post("/office/persons", tags=["insurance office"], openapi_extra=ON_OFFICE,
             summary="Enrol (or update) an insured person; their patient_ref")
async def enrol(body: EnrolBody, request: Request,
                principal: Principal = Depends(require_roles(OFFICE))) -> dict:
    _, keys = config.current()
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        try:
            ref = await persons.enrol(conn, keys, persons.Enrolment(
                body.id_number, body.scheme.value, body.assistance.value, body.region,
                body.ec_index_no, body.card_sn, body.formerly_poor, body.died_on))
        except ValueError:
            raise HTTPException(422, "invalid national id") from None
    return {"patient_ref": ref}


@router.get("/office/settlements", tags=["insurance office"], openapi_extra=ON_OFFICE,
            summary="Settlements of a patient, newest first")
async def office_settlements(patient_ref: PatientRef, request: Request,
                             principal: Principal = Depends(require_roles(OFFICE))) -> dict:
    async with request.app.state.pool.acquire() as conn:
        person_id = await persons.person_by_ref(conn, patient_ref)
        rows = await conn.fetch(
            """SELECT settlement_id, status, answer FROM settlements WHERE person_id = $1
               ORDER BY seq DESC LIMIT 200""", person_id)
    return {"items": [{**(r["answer"]), "status": r["status"]} for r in rows]}


@router.get("/office/flags", tags=["insurance office"], openapi_extra=ON_OFFICE,
            summary="Audit flags with their evidence (open ones by default)")
async def flags(request: Request, include_decided: bool = False,
                principal: Principal = Depends(require_roles(OFFICE))) -> dict:
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT * FROM audit_flags WHERE $1 OR decision IS NULL
               ORDER BY raised_at LIMIT 500""", include_decided)
    return {"items": [{
        "flag_id": r["flag_id"], "settlement_id": r["settlement_id"],
        "patient_ref": r["patient_ref"], "institution": r["institution"],
        "rule_id": r["rule_id"], "grade": r["grade"], "stage": r["stage"],
        "evidence": dict(r["evidence"]), "to_review": r["to_review"],
        "raised_at": r["raised_at"].isoformat(), "decision": r["decision"],
        "decision_reason": r["decision_reason"], "decided_by": r["decided_by"]} for r in rows]}


@router.post("/office/flags/{flag_id}/decision", tags=["insurance office"],
             openapi_extra=ON_OFFICE, summary="Record an auditor's decision on a flag",
             responses={404: {"description": "No such flag."},
                        409: {"description": "Decided already."}})
async def decide(flag_id: Identifier, body: DecisionBody, request: Request,
                 principal: Principal = Depends(require_roles(OFFICE))) -> dict:
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """UPDATE audit_flags SET decision = $2, decision_reason = $3, decided_by = $4,
                   decided_at = db_now() WHERE flag_id = $1 AND decision IS NULL RETURNING *""",
            flag_id, body.decision.value, body.reason.value, principal.user)
        if row is None:
            exists = await conn.fetchval("SELECT true FROM audit_flags WHERE flag_id = $1",
                                         flag_id)
            raise HTTPException(409 if exists else 404,
                                "decided already" if exists else "no such flag")
        await emit_all(conn, [AuditDecisionRecorded(
            flag_id=flag_id, settlement_id=row["settlement_id"], rule_id=row["rule_id"],
            decision=body.decision, reason=body.reason, decided_by=principal.user,
            decided_at=row["decided_at"])])
    return {"flag_id": flag_id, "decision": body.decision.value}


@router.get("/office/alerts", tags=["insurance office"], openapi_extra=ON_OFFICE,
            summary="Return-to-poverty alerts (HighOutOfPocketAlert)")
async def alerts(request: Request, principal: Principal = Depends(require_roles(OFFICE))) -> dict:
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM alerts ORDER BY raised_at DESC LIMIT 500")
    return {"items": [{"settlement_id": r["settlement_id"], "patient_ref": r["patient_ref"],
                       "threshold": f"{r['threshold']:.2f}",
                       "out_of_pocket": f"{r['out_of_pocket']:.2f}",
                       "formerly_poor": r["formerly_poor"],
                       "raised_at": r["raised_at"].isoformat()} for r in rows]}


@router.post("/office/settlements/{settlement_id}/safety-net", tags=["insurance office"],
             openapi_extra=ON_OFFICE,
             summary="Grant 托底救助 on a completed settlement, after review",
             responses={404: {"description": "No completed settlement."},
                        422: {"description": "More than the person still bears."}})
async def grant(settlement_id: Identifier, body: GrantBody, request: Request,
                principal: Principal = Depends(require_roles(OFFICE))) -> dict:
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        await locking.lock_settlement(conn, settlement_id)
        row = await conn.fetchrow("SELECT * FROM settlements WHERE settlement_id = $1 "
                                  "AND status = 'completed'", settlement_id)
        if row is None:
            raise HTTPException(404, "no such settlement")
        await locking.lock_person(conn, row["person_id"])
        b = payers.settle(policy_by_version(row["policy_version"]),
                          payers.request_from_json(row["inputs"]))
        before = await conn.fetchval(
            "SELECT coalesce(sum(amount), 0) FROM safety_net_grants WHERE settlement_id = $1",
            settlement_id)
        figures = await conn.fetchval(
            "SELECT figures FROM accumulators WHERE person_id = $1 AND year = $2",
            row["person_id"], row["year"])
        try:
            g = payers.grant_safety_net(b, handlers._acc(figures), body.amount,
                                        Decimal(before))
        except ValueError:
            raise HTTPException(422, "more than the person still bears") from None
        await conn.execute("UPDATE accumulators SET figures = $3 WHERE person_id = $1 "
                           "AND year = $2", row["person_id"], row["year"],
                           ({k: str(v) for k, v in g.accumulators_after.as_dict()
                                       .items()}))
        at = await conn.fetchval("INSERT INTO safety_net_grants (settlement_id, amount, "
                                 "granted_by) VALUES ($1, $2, $3) RETURNING granted_at",
                                 settlement_id, g.amount, principal.user)
        await emit_all(conn, [SafetyNetAssistanceGranted(
            settlement_id=settlement_id, patient_ref=row["patient_ref"], amount=g.amount,
            out_of_pocket_before=g.out_of_pocket_before, out_of_pocket_after=g.out_of_pocket_after,
            granted_by=principal.user, granted_at=at)])
    return {"settlement_id": settlement_id, "amount": f"{g.amount:.2f}",
            "out_of_pocket_after": f"{g.out_of_pocket_after:.2f}",
            "explanation": explain_safety_net(g)}


FEED = feed_router(
    roles={"clinician", "clinic_terminal", TERMINAL}, aggregate_field="settlement_id",
    openapi_extra=callable_by("clinician", "clinic_terminal", TERMINAL),
    description="Events about the caller's institution's settlements (identity checks, "
    "completed, rejected and reversed settlements, intake rejections), oldest first after "
    "the cursor `after`; audit flags and alerts are the insurance office's, not here.")


def add_routes(app: FastAPI) -> None:
    app.description = DESCRIPTION
    app.add_exception_handler(_Refusal, _on_refusal)
    app.include_router(FEED)
    app.include_router(router)

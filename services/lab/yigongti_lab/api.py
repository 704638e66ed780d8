"""HTTP for people: clinics read their orders; lab staff read any order of their centre."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError
from yigongti_contracts.common import Identifier
from yigongti_contracts.lab.codes import AmendmentReason, CallBackOutcome, CodedValue
from yigongti_kit.auth import Principal, require_principal, require_roles
from yigongti_kit.feed import feed_router
from yigongti_kit.http_openapi import roles as callable_by

from . import critical, fhir, receipt, reports, results, store
from .handlers import APPLIERS
from .http_fields import BarcodePath, CriticalId, DecimalText, OrderId, PatientRefPath

LAB_STAFF_ROLES = {"lab_technologist", "lab_physician"}
CLINIC_ROLES = {"clinician", "clinic_terminal"}
FHIR_JSON = "application/fhir+json"
DESCRIPTION = ("The shared lab centre (医学检验共享中心): receipt and inspection, "
               "confirmation, verification and amendment by lab staff; reports, "
               "recognised results and an institution-scoped feed for clinics. "
               "Every call carries a bearer token (user, institution, roles).")

# Documented answers; out of the caller's scope is answered as missing.
ABSENT_ORDER = {404: {"description": "No such order, or not the caller's to see (the same "
                                     "answer)."}}
ABSENT_TUBE = {404: {"description": "No such tube, or not the caller's centre's (the same "
                                    "answer)."}}
ABSENT_CRITICAL = {404: {"description": "No such critical value, or not the caller's "
                                        "centre's (the same answer)."}}
ANY_READER = callable_by("clinician", "clinic_terminal", "lab_technologist", "lab_physician")

# An id outside the caller's scope is answered as an absent one (the same 404,
# body and headers, after the same one-statement scope check, store.readable /
# store.in_lab_scope): otherwise the answer, or its timing, would tell anyone
# holding a role which orders, tubes and critical values exist.
NO_ORDER = "no such order"
NO_SPECIMEN = "no such specimen"
NO_CRITICAL = "no such critical value"

router = APIRouter(tags=["orders"])


@router.get("/orders/{order_id}", summary="An order with its tests and specimens",
            openapi_extra=ANY_READER, responses=ABSENT_ORDER)
async def get_order(order_id: OrderId, request: Request,
                    principal: Principal = Depends(require_principal)) -> dict:
    async with request.app.state.pool.acquire() as conn:
        return await _readable_order(conn, principal, order_id)


async def _readable_order(conn, principal: Principal, order_id: str) -> dict:
    """The order's view if the caller may read it: lab staff of its lab centre,
    or the ordering institution's clinicians. The role is checked before the
    order is looked up; "absent" and "not yours" get the same 404 (NO_ORDER)."""
    roles = set(principal.roles)
    if not roles & (LAB_STAFF_ROLES | CLINIC_ROLES):
        raise HTTPException(403, "missing role: clinician or lab staff")
    if not await store.readable(conn, order_id, principal.institution,
                                staff=bool(roles & LAB_STAFF_ROLES),
                                clinic=bool(roles & CLINIC_ROLES)):
        raise HTTPException(404, NO_ORDER)
    return await store.order_view(conn, order_id)


@router.post("/specimens/{barcode}/receipt", tags=["lab centre"],
             summary="Receive and inspect a tube (accept, or reject and ask for recollection)",
             openapi_extra=callable_by("lab_technologist"),
             responses={**ABSENT_TUBE,
                        409: {"description": "The tube is not awaiting receipt."}})
async def receive_specimen(barcode: BarcodePath, body: receipt.ReceiptRequest, request: Request,
                           principal: Principal = Depends(require_roles("lab_technologist"))
                           ) -> dict:
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        await _in_lab_scope(conn, principal, barcode=barcode)
        try:
            return await receipt.receive(conn, barcode, body, staff_id=principal.user,
                                         appliers=APPLIERS)
        except receipt.ReceiptConflict as exc:
            raise HTTPException(409, str(exc)) from None


async def _in_lab_scope(conn, principal: Principal, *, barcode: str | None = None,
                        order_id: str | None = None, critical_id: str | None = None) -> None:
    """404 unless the tube, order or critical value is of the caller's lab centre."""
    if not await store.in_lab_scope(conn, principal.institution, barcode=barcode,
                                    order_id=order_id, critical_id=critical_id):
        raise HTTPException(404, NO_SPECIMEN if barcode else NO_ORDER if order_id
                            else NO_CRITICAL)


@router.post("/specimens/{barcode}/confirm", tags=["lab centre"],
             summary="Technical confirmation of a tube's results (raises critical values)",
             openapi_extra=callable_by("lab_technologist"),
             responses={**ABSENT_TUBE, 409: {"description": "Nothing awaiting confirmation."}})
async def confirm_results(barcode: BarcodePath, request: Request,
                          principal: Principal = Depends(require_roles("lab_technologist"))
                          ) -> dict:
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        await _in_lab_scope(conn, principal, barcode=barcode)
        try:
            return await results.confirm(conn, barcode, staff_id=principal.user)
        except results.ConfirmConflict as exc:
            raise HTTPException(409, str(exc)) from None


@router.post("/orders/{order_id}/verify", tags=["lab centre"],
             summary="Verify the order's confirmed results and release the report",
             openapi_extra=callable_by("lab_physician"),
             responses={**ABSENT_ORDER, 409: {"description": "Nothing to verify, or another "
                                                             "physician is at it."}})
async def verify_report(order_id: OrderId, request: Request,
                        principal: Principal = Depends(require_roles("lab_physician"))) -> dict:
    return await _on_report(request, principal, order_id, lambda conn, order: reports.verify(
        conn, order, physician=principal.user))


def _one_of(*fields: str):
    """JSON Schema: exactly one of `fields` is given, as a string (what the model checks)."""
    def extra(schema: dict[str, Any]) -> None:
        schema["oneOf"] = [{"required": [f], "properties": {f: {"type": "string"}}}
                           for f in fields]
    return extra


class AmendRequest(BaseModel):
    """A corrected result: `value` for a numeric result, `coded_value` for a
    coded one (exactly one, in the result's own form)."""

    model_config = ConfigDict(extra="forbid",
                              json_schema_extra=_one_of("value", "coded_value"))

    observation_id: Identifier
    value: DecimalText | None = None
    coded_value: CodedValue | None = None
    reason: AmendmentReason

    @model_validator(mode="after")
    def _exactly_one(self) -> AmendRequest:
        if (self.value is None) == (self.coded_value is None):
            raise PydanticCustomError("value_or_coded_value",
                                      "exactly one of value and coded_value")
        return self


@router.post("/orders/{order_id}/amend", tags=["lab centre"],
             summary="Amend a verified result: a new report revision, the original kept",
             openapi_extra=callable_by("lab_physician"),
             responses={404: {"description": "No such order or result on it, or not the "
                                             "caller's to see (the same answer)."},
                        409: {"description": "The result is not verified, is not in the form "
                                             "given (numeric or coded), or another physician "
                                             "is at the order."}})
async def amend_report(order_id: OrderId, body: AmendRequest, request: Request,
                       principal: Principal = Depends(require_roles("lab_physician"))) -> dict:
    try:
        return await _on_report(request, principal, order_id, lambda conn, order: reports.amend(
            conn, order, body.observation_id, value=body.value, coded_value=body.coded_value,
            reason=body.reason, physician=principal.user))
    except LookupError:
        raise HTTPException(404, "no such result on this order") from None


async def _on_report(request: Request, principal: Principal, order_id: str, action) -> dict:
    """Run a physician's action on the order's report with the order locked (a
    second physician gets a 409, not a wait: reports.lock_order), once the
    order is known to be in the caller's scope."""
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        await _in_lab_scope(conn, principal, order_id=order_id)
        try:
            order = await reports.lock_order(conn, order_id)
            return await action(conn, order)
        except reports.ReportConflict as exc:
            raise HTTPException(409, str(exc)) from None


ANSWERED = [o.value for o in CallBackOutcome if o is not CallBackOutcome.unable_to_reach]


class CallBackRequest(BaseModel):
    """How a call went; `reached` (who answered) is given exactly when someone did."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"properties": {"outcome": {"enum": ANSWERED}, "reached": {"type": "string"}},
         "required": ["outcome", "reached"]},
        {"properties": {"outcome": {"const": CallBackOutcome.unable_to_reach.value},
                        "reached": {"type": "null"}}},
    ]})

    reached: Identifier | None = None
    outcome: CallBackOutcome

    @model_validator(mode="after")
    def _reached_iff_answered(self) -> CallBackRequest:
        if self.outcome is not CallBackOutcome.unable_to_reach and self.reached is None:
            raise PydanticCustomError("reached_required", "who answered is required")
        if self.outcome is CallBackOutcome.unable_to_reach and self.reached is not None:
            raise PydanticCustomError("reached_not_allowed", "nobody answered")
        return self


@router.post("/critical-values/{critical_id}/call-backs", tags=["lab centre"],
             summary="Record a call-back to the clinic; read-back confirmed stops the clock",
             openapi_extra=callable_by("lab_technologist", "lab_physician"),
             responses={**ABSENT_CRITICAL,
                        409: {"description": "The critical value is already acknowledged."}})
async def call_back(critical_id: CriticalId, body: CallBackRequest, request: Request,
                    principal: Principal = Depends(require_principal)) -> dict:
    if not set(principal.roles) & LAB_STAFF_ROLES:
        raise HTTPException(403, "missing role: lab staff")
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        await _in_lab_scope(conn, principal, critical_id=critical_id)
        try:
            return await critical.record_call_back(
                conn, critical_id, called_by=principal.user, reached=body.reached,
                outcome=body.outcome)
        except critical.CriticalConflict as exc:
            raise HTTPException(409, str(exc)) from None


@router.get("/orders/{order_id}/report", tags=["clinic", "lab centre"],
            summary="The order's report: results with ranges, flags, verifier and amendments",
            openapi_extra=ANY_READER, responses=ABSENT_ORDER)
async def get_report(order_id: OrderId, request: Request,
                     principal: Principal = Depends(require_principal)) -> dict:
    async with request.app.state.pool.acquire() as conn:
        order = await _readable_order(conn, principal, order_id)
        return await store.report_view(conn, order_id, order)


@router.get("/orders/{order_id}/fhir", tags=["clinic", "lab centre"],
            response_class=JSONResponse,
            openapi_extra=ANY_READER,
            responses={200: {"content": {FHIR_JSON: {}},
                             "description": "A FHIR R4 Bundle (collection)"}, **ABSENT_ORDER},
            summary="The order as HL7 FHIR R4: its ServiceRequests, Specimens, the "
                    "DiagnosticReport and the Observations it reports")
async def get_order_fhir(order_id: OrderId, request: Request,
                         principal: Principal = Depends(require_principal)) -> Response:
    async with request.app.state.pool.acquire() as conn:
        order = await _readable_order(conn, principal, order_id)
        report = await store.report_view(conn, order_id, order)
        recognised = await store.recognised_until(conn, order_id)
    current = [(reports.observation_of(row), row) for row in report["observations"]
               if row["status"] == "verified"]
    bundle = fhir.order_bundle(order, current, report_id=report["report_id"],
                               revisions=report["revisions"], recognised=recognised)
    # fhir.dumps, not JSONResponse: decimals keep their reported precision.
    return Response(fhir.dumps(bundle), media_type=FHIR_JSON)


@router.get("/patients/{patient_ref}/recognised-results", tags=["clinic", "lab centre"],
            summary="A patient's recognised results (互认), valid now",
            openapi_extra=ANY_READER,
            responses={404: {"description": "No order of the caller's for this patient (the "
                                            "same answer as an unknown patient)."}})
async def recognised_results(patient_ref: PatientRefPath, request: Request,
                             principal: Principal = Depends(require_principal)) -> dict:
    async with request.app.state.pool.acquire() as conn:
        # Scoped as an order is (_may_read): to a clinic that has (had) an order
        # for this patient, or to the staff of a lab centre that has. Any holder
        # of a lab staff role used to pass, whatever its institution: another
        # county's lab, or a token for a clinic carrying that role, read every
        # patient's results by ref.
        roles = set(principal.roles)
        if not await conn.fetchval(
                """SELECT true FROM orders WHERE patient_ref = $1
                     AND (($3 AND lab_centre = $2) OR ($4 AND ordering_institution = $2))
                   LIMIT 1""",
                patient_ref, principal.institution, bool(roles & LAB_STAFF_ROLES),
                bool(roles & CLINIC_ROLES)):
            raise HTTPException(404, "no such patient")
        rows = await store.recognised_now(conn, patient_ref)
    return {"patient_ref": patient_ref, "results": rows}


@router.get("/worklist", tags=["lab centre"],
            summary="The lab centre's work queue with ages (received, awaiting results, "
                    "awaiting confirmation, awaiting verification)",
            openapi_extra=callable_by("lab_technologist", "lab_physician"))
async def worklist(request: Request, principal: Principal = Depends(require_principal)) -> dict:
    if not set(principal.roles) & LAB_STAFF_ROLES:
        raise HTTPException(403, "missing role: lab staff")
    async with request.app.state.pool.acquire() as conn:
        return await store.worklist(conn, principal.institution)


FEED = feed_router(
    roles=CLINIC_ROLES, aggregate_field="order_id",
    openapi_extra=callable_by("clinician", "clinic_terminal"),
    description="Events about the caller's institution's orders (accepted orders, intake "
    "rejections, recollection requests, critical values, reports…), oldest first after the "
    "cursor `after`; `next` is the cursor for the next call. Results reach the clinic once "
    "verified (LabReportVerified): before that a tube with results shows only as being "
    "tested (`yigongti.lab.specimen.in_testing.v1`: order, barcode, time), and a critical "
    "value comes as soon as the technologist confirms it (migrations/0013).")


def add_routes(app: FastAPI) -> None:
    app.description = DESCRIPTION
    app.include_router(FEED)
    app.include_router(router)

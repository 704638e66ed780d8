"""HTTP for people: clinics read their orders; lab staff read any order of their centre."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from yigongti_kit.auth import Principal, ensure_institution, require_principal, require_roles

from . import receipt, store
from .handlers import APPLIERS

LAB_STAFF_ROLES = {"lab_technologist", "lab_physician"}
CLINIC_ROLES = {"clinician", "clinic_terminal"}

router = APIRouter(tags=["orders"])


def _may_read(principal: Principal, order: dict) -> bool:
    roles = set(principal.roles)
    if roles & LAB_STAFF_ROLES and principal.institution == order["lab_centre"]:
        return True
    return bool(roles & CLINIC_ROLES) and principal.institution == order["ordering_institution"]


@router.get("/orders/{order_id}", summary="An order with its tests and specimens")
async def get_order(order_id: str, request: Request,
                    principal: Principal = Depends(require_principal)) -> dict:
    # The role is checked before the order is looked up, and "absent" gets the
    # same answer as "not yours": otherwise 403-vs-404 would tell any caller
    # which order ids exist.
    if not set(principal.roles) & (LAB_STAFF_ROLES | CLINIC_ROLES):
        raise HTTPException(403, "missing role: clinician or lab staff")
    async with request.app.state.pool.acquire() as conn:
        order = await store.order_view(conn, order_id)
    if order is None or not _may_read(principal, order):
        raise HTTPException(403, "order out of scope")
    return order


@router.get("/feed", tags=["clinic"], summary="The clinic's feed of its orders' events")
async def feed(request: Request, after: int = Query(0, ge=0, description="last seq seen"),
               limit: int = Query(100, ge=1, le=500),
               wait: float = Query(0, ge=0, le=25, description="long-poll seconds when empty"),
               principal: Principal = Depends(require_principal)) -> dict:
    """Events about the caller's institution's orders (accepted orders, intake
    rejections, recollection requests, critical values, reports…), oldest
    first after the cursor `after`; `next` is the cursor for the next call."""
    if not set(principal.roles) & CLINIC_ROLES:
        raise HTTPException(403, "missing role: clinician")
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        async with request.app.state.pool.acquire() as conn:
            rows = await store.feed_page(conn, principal.institution, after, limit)
        if rows or asyncio.get_running_loop().time() >= deadline:
            break
        await asyncio.sleep(0.2)
    return {
        "items": [{"seq": r["seq"], "id": str(r["ce_id"]), "type": r["type"],
                   "order_id": r["order_id"], "time": r["created_at"].isoformat(),
                   "data": r["payload"]} for r in rows],
        "next": rows[-1]["seq"] if rows else after,
    }


@router.post("/specimens/{barcode}/receipt", tags=["lab centre"],
             summary="Receive and inspect a tube (accept, or reject and ask for recollection)",
             responses={404: {"description": "unknown barcode"},
                        409: {"description": "the tube is not awaiting receipt"}})
async def receive_specimen(barcode: str, body: receipt.ReceiptRequest, request: Request,
                           principal: Principal = Depends(require_roles("lab_technologist"))
                           ) -> dict:
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        scope = await store.specimen_scope(conn, barcode)
        if scope is None:
            raise HTTPException(404, "no such specimen")
        ensure_institution(principal, scope["lab_centre"])
        try:
            return await receipt.receive(conn, barcode, body, staff_id=principal.user,
                                         appliers=APPLIERS)
        except receipt.ReceiptConflict as exc:
            raise HTTPException(409, str(exc)) from None


def add_routes(app: FastAPI) -> None:
    app.include_router(router)

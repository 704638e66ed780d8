"""HTTP for people: clinics read their orders; lab staff read any order of their centre."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from yigongti_kit.auth import Principal, require_principal

from . import store

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
    async with request.app.state.pool.acquire() as conn:
        order = await store.order_view(conn, order_id)
    # Same answer for "absent" and "not yours": an order id reveals nothing.
    if order is None or not _may_read(principal, order):
        if order is not None and not set(principal.roles) & (LAB_STAFF_ROLES | CLINIC_ROLES):
            raise HTTPException(403, "missing role: clinician or lab staff")
        if order is not None:
            raise HTTPException(403, "institution out of scope")
        raise HTTPException(404, "no such order")
    return order


def add_routes(app: FastAPI) -> None:
    app.include_router(router)

"""One function per intake event: decode (done by the kit) → domain → store → events."""

from __future__ import annotations

from datetime import UTC, datetime

from yigongti_contracts.lab.v1 import (
    LabOrderAccepted,
    LabOrderPlaced,
    SpecimenCollected,
    SpecimenCollectionRecorded,
)
from yigongti_contracts.refdata import load as load_refdata
from yigongti_kit.consumer import Handler, Intake, Rejection

from . import store
from .catalogue import load_catalogue
from .domain import collection_problems, order_problems, processing_state


def _now() -> datetime:
    return datetime.now(UTC)


async def on_order_placed(intake: Intake) -> None:
    order: LabOrderPlaced = intake.event
    refdata = load_refdata()
    sender = intake.sender.institution_id if intake.sender else None
    problems = order_problems(order, load_catalogue(), refdata, sender)
    if problems:
        raise Rejection(_reason(problems), problems)
    lab_centre = refdata.lab_centre_for(order.ordering_institution).id
    if not await store.insert_order(intake.conn, order, lab_centre):
        raise Rejection("order_exists", [("order_id", "exists")])
    await intake.emit(LabOrderAccepted(
        order_id=order.order_id,
        visit_id=order.visit_id,
        patient_ref=order.patient_ref,
        ordering_institution=order.ordering_institution,
        lab_centre=lab_centre,
        priority=order.priority,
        tests=tuple(t.code for t in order.tests),
        accepted_at=_now(),
    ))


async def on_specimen_collected(intake: Intake) -> None:
    specimen: SpecimenCollected = intake.event
    order = await store.order_for_update(intake.conn, specimen.order_id)
    if order is None:
        raise Rejection("unknown_order", [("order_id", "unknown")])
    problems = collection_problems(
        specimen,
        ordering_institution=order["ordering_institution"],
        test_status=await store.test_status(intake.conn, specimen.order_id),
        catalogue=load_catalogue(),
        sender_institution=intake.sender.institution_id if intake.sender else None,
    )
    if problems:
        raise Rejection(_reason(problems), problems)
    state = processing_state(specimen)
    if not await store.insert_specimen(intake.conn, specimen, state.value):
        raise Rejection("barcode_already_collected", [("barcode", "exists")])
    await intake.emit(SpecimenCollectionRecorded(
        order_id=specimen.order_id,
        barcode=specimen.barcode,
        tests=specimen.tests,
        tube=specimen.tube,
        processing_state=state,
        collected_at=specimen.collected_at,
        centrifuged_at=specimen.centrifuged_at,
        collector_id=specimen.collector_id,
        recollection_of=specimen.recollection_of,
    ))


def _reason(problems: list[tuple[str, str]]) -> str:
    """The record's reason: the first problem's code (all are listed in fields)."""
    return problems[0][1]


HANDLERS: dict[str, Handler] = {
    LabOrderPlaced.CE_TYPE: on_order_placed,
    SpecimenCollected.CE_TYPE: on_specimen_collected,
}

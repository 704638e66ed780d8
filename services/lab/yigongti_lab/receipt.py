"""Receipt and inspection of a tube at the lab centre (staff over HTTP), and
the in-transit watch that raises an alarm before an overdue tube arrives."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from pydantic import AwareDatetime, BaseModel, ConfigDict
from yigongti_contracts.lab.codes import ProcessingState, TubeType
from yigongti_contracts.lab.parts import Inspection, LoggerReadout
from yigongti_contracts.lab.v1 import (
    RecollectionRequested,
    SpecimenCollected,
    SpecimenInTransitOverdue,
    SpecimenReceived,
    SpecimenRejected,
)
from yigongti_kit import timers

from . import locking, parking, stability, store
from .domain import SpecimenState, TestStatus
from .events import emit, emit_all
from .http_fields import DecimalText

OVERDUE_TIMER = "transit_overdue"


class ReceiptRequest(BaseModel):
    """What the technologist records at the bench for one tube."""

    model_config = ConfigDict(extra="forbid")

    inspection: Inspection
    logger: LoggerReadout | None = None
    received_at: AwareDatetime | None = None
    labelled: bool = True
    temperature_class: stability.TemperatureClass | None = None
    triglyceride_g_per_l: DecimalText | None = None  # a decimal string, as every quantity


class ReceiptConflict(Exception):
    """The tube is not in a state where it can be received (HTTP 409)."""


def stability_window(specimen: SpecimenCollected) -> stability.StabilityWindow | None:
    """Until when the tube is stable, or None when no limit is known for it."""
    try:
        return stability.stability_window(specimen.collected_at, specimen.tests, specimen.tube,
                                          centrifuged_at=specimen.centrifuged_at)
    except stability.NoStabilityData:
        return None  # no limit known for this tube: nothing to watch


async def watch_transit(conn: asyncpg.Connection, barcode: str,
                        window: stability.StabilityWindow) -> None:
    """Set the in-transit alarm for when the tube stops being stable."""
    await timers.schedule(conn, OVERDUE_TIMER, barcode, at=window.stable_until,
                          payload={"limiting_test": window.limiting_test,
                                   "processing_state": window.processing_state.value})


async def on_overdue(conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
    await locking.lock_tube(conn, timer["key"])
    specimens = await store.specimens_for_update(conn, [timer["key"]])
    specimen = specimens.get(timer["key"])
    if specimen is None or specimen["state"] not in SpecimenState.RECEIVABLE:
        return
    await emit(conn, SpecimenInTransitOverdue(
        order_id=specimen["order_id"],
        barcode=specimen["barcode"],
        shipment_id=specimen["shipment_id"],
        limiting_test=timer["payload"]["limiting_test"],
        processing_state=ProcessingState(timer["payload"]["processing_state"]),
        collected_at=specimen["collected_at"],
        stable_until=specimen["stable_until"],
        detected_at=datetime.now(UTC),
    ))


async def receive(conn: asyncpg.Connection, barcode: str, request: ReceiptRequest,
                  *, staff_id: str, appliers) -> dict:
    """Record receipt, under the order's lock (locking.py): accept
    (SpecimenReceived) or reject (SpecimenRejected and RecollectionRequested).
    The caller has checked the tube's scope; LookupError for an unknown tube."""
    if await locking.lock_tube(conn, barcode) is None:
        raise LookupError(barcode)
    specimen = await store.specimen_for_receipt(conn, barcode)
    if specimen["state"] not in SpecimenState.RECEIVABLE:
        raise ReceiptConflict(f"specimen is {specimen['state']}, not awaiting receipt")
    tests = list(specimen["tests"])
    received_at = request.received_at or await timers.db_now(conn)
    tube = TubeType(specimen["tube"])
    reasons = stability.rejection_reasons(
        request.inspection,
        tests=tests, tube=tube, collected_at=specimen["collected_at"], received_at=received_at,
        centrifuged_at=specimen["centrifuged_at"], logger=request.logger,
        temperature_class=request.temperature_class,
        triglyceride_g_per_l=request.triglyceride_g_per_l, labelled=request.labelled,
    )
    await timers.cancel(conn, OVERDUE_TIMER, barcode)
    inspection = request.inspection.model_dump(mode="json")
    logger = request.logger.model_dump(mode="json") if request.logger else None
    if reasons:
        await store.record_receipt(conn, barcode, state=SpecimenState.REJECTED,
                                   received_at=received_at, received_by=staff_id,
                                   inspection=inspection, logger=logger,
                                   reasons=[r.value for r in reasons])
        await store.set_tests_status(conn, barcode, TestStatus.RECOLLECT)
        await emit_all(conn, [
            SpecimenRejected(
                order_id=specimen["order_id"], barcode=barcode, lab_centre=specimen["lab_centre"],
                tests=tuple(tests), reasons=reasons, inspection=request.inspection,
                logger=request.logger, rejected_by=staff_id, rejected_at=received_at,
                patient_ref=specimen["patient_ref"],
            ),
            RecollectionRequested(
                order_id=specimen["order_id"], barcode=barcode,
                ordering_institution=specimen["ordering_institution"], tests=tuple(tests),
                tube=tube, reasons=reasons, requested_at=received_at,
            ),
        ])
        # Results that came before this receipt waited for it: answer them now
        # (refused: the tube is rejected) instead of leaving them parked until
        # the grace period ends and refusing them as "prerequisite_missing".
        await parking.release(conn, "received", barcode, appliers)
        return {"barcode": barcode, "state": SpecimenState.REJECTED,
                "reasons": [r.value for r in reasons]}
    await store.record_receipt(conn, barcode, state=SpecimenState.RECEIVED,
                               received_at=received_at, received_by=staff_id,
                               inspection=inspection, logger=logger, reasons=None)
    await emit(conn, SpecimenReceived(
        order_id=specimen["order_id"], barcode=barcode, lab_centre=specimen["lab_centre"],
        received_by=staff_id, received_at=received_at,
        processing_state=ProcessingState(specimen["processing_state"]),
        inspection=request.inspection, logger=request.logger,
        patient_ref=specimen["patient_ref"],
    ))
    await parking.release(conn, "received", barcode, appliers)
    return {"barcode": barcode, "state": SpecimenState.RECEIVED, "reasons": []}

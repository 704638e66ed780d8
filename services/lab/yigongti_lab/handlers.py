"""One apply function per intake event: domain check → store → events, in the
caller's transaction, under the order's lock (locking.py). A record whose
prerequisite has not arrived yet raises `Park` and waits (parking.py); a
record that can never apply raises `Rejection` and is answered with
IntakeRejected."""

from __future__ import annotations

import asyncpg
from yigongti_contracts.lab.v1 import (
    AnalyserResults,
    CriticalValueAck,
    DuplicateTestAvoided,
    LabOrderAccepted,
    LabOrderCancelled,
    LabOrderPlaced,
    LabTestsCancelled,
    SpecimenCollected,
    SpecimenCollectionRecorded,
    SpecimenDispatched,
    SpecimenInTransit,
)
from yigongti_contracts.refdata import load as load_refdata
from yigongti_kit import timers
from yigongti_kit.consumer import Handler, Intake, Rejection

from . import catalogue, charges, critical, locking, parking, receipt, reports, results, store
from .catalogue import load_catalogue
from .domain import (
    SpecimenState,
    collection_problems,
    order_problems,
    processing_state,
    tests_to_cancel,
)
from .events import emit, emit_all
from .parking import Apply, Origin, Park


def _refuse(problems: list[tuple[str, str]]) -> Rejection:
    """The record's reason is the first problem's code; all are listed in fields."""
    return Rejection(problems[0][1], problems)


async def apply_order_placed(conn: asyncpg.Connection, order: LabOrderPlaced,
                             origin: Origin) -> None:
    await locking.lock_order(conn, order.order_id)
    refdata = load_refdata()
    problems = order_problems(order, load_catalogue(), refdata, origin.sender_institution)
    if problems:
        raise _refuse(problems)
    lab_centre = refdata.lab_centre_for(order.ordering_institution).id
    # Mutual recognition (互认): a test answered by a recognised result is not
    # repeated, unless the order gives one of the override reasons.
    reused = await reports.recognised_for(
        conn, order.patient_ref,
        [t.code for t in order.tests
         if t.override_reason is None and catalogue.recognition_window(t.code) is not None])
    # The database clock stamps acceptance, as verification stamped verified_at
    # / valid_until with it and GET /recognised-results compares with it: the
    # host clock here could call a result valid that the query calls expired.
    accepted_at = await store.insert_order(conn, order, lab_centre, frozenset(reused))
    if accepted_at is None:
        raise Rejection("order_exists", [("order_id", "exists")])
    if reused:
        await conn.executemany(
            "INSERT INTO result_reuses (order_id, test_code, observation_id) VALUES ($1, $2, $3)",
            [(order.order_id, code, found["observation_id"]) for code, found in reused.items()])
    await emit_all(conn, [
        LabOrderAccepted(
            order_id=order.order_id,
            visit_id=order.visit_id,
            patient_ref=order.patient_ref,
            ordering_institution=order.ordering_institution,
            lab_centre=lab_centre,
            priority=order.priority,
            tests=tuple(t.code for t in order.tests if t.code not in reused),
            avoided_tests=tuple(reused),
            accepted_at=accepted_at,
        ),
        *(DuplicateTestAvoided(
            order_id=order.order_id, test_code=code, patient_ref=order.patient_ref,
            ordering_institution=order.ordering_institution,
            recognised=reports.recognised_part(found), avoided_at=accepted_at,
        ) for code, found in reused.items()),
    ])
    await parking.release(conn, "order", order.order_id, APPLIERS)


async def apply_specimen_collected(conn: asyncpg.Connection, specimen: SpecimenCollected,
                                   origin: Origin) -> None:
    await locking.lock_order(conn, specimen.order_id)
    order = await store.order_for_update(conn, specimen.order_id)
    if order is None:
        raise Park("order", specimen.order_id, "order_id")
    problems = collection_problems(
        specimen,
        ordering_institution=order["ordering_institution"],
        test_status=order["tests"],
        catalogue=load_catalogue(),
        sender_institution=origin.sender_institution,
    )
    if specimen.recollection_of is not None:
        earlier = (await store.specimens_for_update(conn, [specimen.recollection_of])).get(
            specimen.recollection_of)
        if earlier is None or earlier["order_id"] != specimen.order_id \
                or earlier["state"] != SpecimenState.REJECTED:
            problems.append(("recollection_of", "not_a_rejected_tube_of_the_order"))
    if problems:
        raise _refuse(problems)
    state = processing_state(specimen)
    window = receipt.stability_window(specimen)
    if not await store.insert_specimen(conn, specimen, state.value,
                                       window and window.stable_until):
        raise Rejection("barcode_already_collected", [("barcode", "exists")])
    if window is not None:
        await receipt.watch_transit(conn, specimen.barcode, window)
    await emit(conn, SpecimenCollectionRecorded(
        order_id=specimen.order_id,
        barcode=specimen.barcode,
        tests=specimen.tests,
        tube=specimen.tube,
        processing_state=state,
        collected_at=specimen.collected_at,
        centrifuged_at=specimen.centrifuged_at,
        collector_id=specimen.collector_id,
        recollection_of=specimen.recollection_of,
        patient_ref=order["patient_ref"],
    ))
    await parking.release(conn, "specimen", specimen.barcode, APPLIERS)


async def apply_specimen_dispatched(conn: asyncpg.Connection, dispatch: SpecimenDispatched,
                                    origin: Origin) -> None:
    # Only the tubes whose orders are locked are moved; one that appears after
    # this read waits as an unknown one (locking.py).
    found = await locking.lock_tubes(conn, dispatch.barcodes)
    known = await store.specimens_for_update(conn, list(found))
    missing = [b for b in dispatch.barcodes if b not in known]
    if missing and len(dispatch.barcodes) == 1:
        raise Park("specimen", missing[0], "barcodes.0")
    # Tubes not yet known wait one by one; the known ones move now. Each waits
    # under its own place in the record: parked through the one-barcode copy's
    # apply, every part was "barcodes.0", and the answers after the grace period
    # could not tell the sender which tubes never arrived.
    for barcode in missing:
        await parking.run(conn, dispatch.model_copy(update={"barcodes": (barcode,)}), origin,
                          apply_specimen_dispatched,
                          field=f"barcodes.{dispatch.barcodes.index(barcode)}")
    if not known:
        return
    forbidden = [i for i, b in enumerate(dispatch.barcodes) if b in known
                 and origin.sender_institution not in (None, known[b]["ordering_institution"])]
    if forbidden:
        raise Rejection("forbidden_institution", [(f"barcodes.{i}", "forbidden_institution")
                                                  for i in forbidden])
    # Already in transit or received: a late or repeated dispatch changes nothing.
    moving = [b for b, specimen in known.items() if specimen["state"] in SpecimenState.DISPATCHABLE]
    if not moving:
        return
    await store.set_in_transit(conn, moving, shipment_id=dispatch.shipment_id,
                               courier_id=dispatch.courier_id,
                               logger_id=dispatch.temperature_logger_id,
                               dispatched_at=dispatch.dispatched_at)
    await emit_all(conn, [SpecimenInTransit(
        order_id=known[barcode]["order_id"],
        barcode=barcode,
        shipment_id=dispatch.shipment_id,
        courier_id=dispatch.courier_id,
        temperature_logger_id=dispatch.temperature_logger_id,
        dispatched_at=dispatch.dispatched_at,
    ) for barcode in moving])


async def apply_order_cancelled(conn: asyncpg.Connection, cancel: LabOrderCancelled,
                                origin: Origin) -> None:
    await locking.lock_order(conn, cancel.order_id)
    order = await store.order_for_update(conn, cancel.order_id)
    if order is None:
        raise Park("order", cancel.order_id, "order_id")
    if origin.sender_institution not in (None, order["ordering_institution"]):
        raise Rejection("forbidden_institution", [("order_id", "forbidden_institution")])
    status = order["tests"]
    chosen, problems = tests_to_cancel(cancel.tests, status)
    if problems:
        raise _refuse(problems)
    await store.cancel_tests(conn, cancel.order_id, chosen, reason=cancel.reason.value,
                             at=cancel.cancelled_at)
    await charges.reverse(conn, cancel.order_id, chosen,
                          order_cancelled=len(chosen) == len(status))
    emptied = await store.specimens_left_without_tests(conn, cancel.order_id)
    await store.set_specimen_state(conn, emptied, SpecimenState.CANCELLED)
    # A tube whose remaining tests are further along than the cancelled ones
    # moves on (else e.g. one left "received" with its only live test verified).
    await store.advance_specimens(conn, cancel.order_id)
    for barcode in emptied:
        await timers.cancel(conn, receipt.OVERDUE_TIMER, barcode)
    remaining = await store.test_status(conn, cancel.order_id)
    await emit(conn, LabTestsCancelled(
        order_id=cancel.order_id,
        tests=tuple(chosen),
        order_cancelled=all(s == "cancelled" for s in remaining.values()),
        patient_ref=order["patient_ref"],
        reason=cancel.reason,
        cancelled_by=cancel.cancelled_by,
        cancelled_at=cancel.cancelled_at,
    ))
    # Results that were waiting for the receipt of a tube cancelled now are
    # answered now (refused: the tube is cancelled), not after the grace period
    # as "prerequisite_missing".
    for barcode in emptied:
        await parking.release(conn, "received", barcode, APPLIERS)


APPLIERS: dict[str, Apply] = {
    LabOrderPlaced.CE_TYPE: apply_order_placed,
    SpecimenCollected.CE_TYPE: apply_specimen_collected,
    SpecimenDispatched.CE_TYPE: apply_specimen_dispatched,
    LabOrderCancelled.CE_TYPE: apply_order_cancelled,
    AnalyserResults.CE_TYPE: results.apply_analyser_results,
    CriticalValueAck.CE_TYPE: critical.apply_ack,
}


def _intake_handler(apply: Apply) -> Handler:
    async def handle(intake: Intake) -> None:
        await parking.run(intake.conn, intake.event, parking.origin_of(intake), apply)

    return handle


HANDLERS: dict[str, Handler] = {ce_type: _intake_handler(a) for ce_type, a in APPLIERS.items()}

"""The order lock (issue 8 item 10, the rule in yigongti_lab/locking.py): every
intake handler, timer handler and HTTP action that changes an order waits
while another transaction holds that order's lock, which is how an HTTP
action holds it while it works. Each case holds the lock from the test's own
connection, starts the handler or action, sees it wait for the lock, lets go
and sees it finish.

The intake handlers run as the kit's consumer runs them (parking.run in a
transaction), the timer handlers as the timer poller does, the HTTP actions
through the lab's routes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
from labflow import collected, order
from labjourney import (
    analyser_results,
    confirm,
    dispatch,
    fetchval,
    obs,
    one,
    ordered_tube,
    physician,
    receive,
    report_results,
    technologist,
    until,
    verified_order,
)
from yigongti_contracts.lab.codes import CancellationReason
from yigongti_contracts.lab.v1 import CriticalValueAck, LabOrderCancelled
from yigongti_kit.consumer import Rejection
from yigongti_lab import critical, parking, receipt
from yigongti_lab.handlers import APPLIERS

# The order's lock as locking.py writes it down: a transaction-level advisory
# lock on the key parking.py uses for ("order", order_id).
ORDER_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('order' || chr(31) || $1, 0))"


async def intake(lab, event) -> None:
    """Apply an intake record as the kit's consumer does (a refusal is an answer)."""
    origin = parking.Origin(str(uuid.uuid4()), event.CE_TYPE, "/terminals/T-test",
                            event.kafka_key(), None)
    async with lab.pool.acquire() as conn:
        try:
            async with conn.transaction():
                await parking.run(conn, event, origin, APPLIERS[event.CE_TYPE])
        except Rejection:
            pass


async def timer(lab, handler, kind: str, key: str) -> None:
    """Fire a timer now, as the timer poller does."""
    async with lab.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM timers WHERE kind = $1 AND key = $2", kind, key)
        assert row is not None, (kind, key)
        await handler(conn, row)


async def http_ok(client_of, method: str, path: str, json=None) -> None:
    async with client_of() as client:
        answer = await client.request(method, path, json=json)
    assert answer.status_code == 200, (path, answer.text)


async def _accepted(lab, dev_keys, tests=("K",)):
    o = order(dev_keys.institution_id, tests=tests, patient_ref=f"v1:{uuid.uuid4().hex * 2}")
    await lab.terminal.publish(o)
    await one(lab, "order.accepted.v1", order_id=o.order_id)
    return o


async def _confirmed_critical(lab, dev_keys):
    o, t = await ordered_tube(lab, dev_keys, ("K",))
    await receive(lab, dev_keys, t.barcode)
    await report_results(lab, dev_keys, t.barcode, obs("K", "6.9"))
    await confirm(lab, dev_keys, t.barcode)
    return o, await one(lab, "critical_value.raised.v1", barcode=t.barcode)


# Each case: (order id, the handler or action to run) once the order is set up.
Case = Callable[..., Awaitable[tuple[str, Callable[[], Awaitable[None]]]]]


async def order_placed(lab, dev_keys):
    o = order(dev_keys.institution_id, tests=("K",))
    return o.order_id, lambda: intake(lab, o)


async def specimen_collected(lab, dev_keys):
    o = await _accepted(lab, dev_keys)
    return o.order_id, lambda: intake(lab, collected(o, tests=("K",)))


async def specimen_dispatched(lab, dev_keys):
    o = await _accepted(lab, dev_keys)
    t = collected(o, tests=("K",))
    await lab.terminal.publish(t)
    await one(lab, "specimen.collection_recorded.v1", barcode=t.barcode)
    return o.order_id, lambda: intake(lab, dispatch(t.barcode))


async def order_cancelled(lab, dev_keys):
    o = await _accepted(lab, dev_keys)
    return o.order_id, lambda: intake(lab, LabOrderCancelled(
        order_id=o.order_id, reason=CancellationReason.clinical_change, cancelled_by="doc-17",
        cancelled_at=datetime.now(UTC)))


async def analyser_results_sent(lab, dev_keys):
    o, t = await ordered_tube(lab, dev_keys, ("K",))
    await receive(lab, dev_keys, t.barcode)
    return o.order_id, lambda: intake(lab, analyser_results(t.barcode, obs("K", "4.2")))


async def critical_value_ack(lab, dev_keys):
    o, raised = await _confirmed_critical(lab, dev_keys)
    return o.order_id, lambda: intake(lab, CriticalValueAck(
        order_id=o.order_id, critical_id=raised["critical_id"], received_by="doc-17",
        read_back_confirmed=True, acknowledged_at=datetime.now(UTC)))


async def transit_overdue_timer(lab, dev_keys):
    o, t = await ordered_tube(lab, dev_keys, ("K",))
    return o.order_id, lambda: timer(lab, receipt.on_overdue, receipt.OVERDUE_TIMER, t.barcode)


async def critical_escalation_timer(lab, dev_keys):
    o, raised = await _confirmed_critical(lab, dev_keys)
    return o.order_id, lambda: timer(lab, critical.on_escalation, critical.ESCALATION_TIMER,
                                     raised["critical_id"])


async def receipt_over_http(lab, dev_keys):
    o, t = await ordered_tube(lab, dev_keys, ("K",))
    return o.order_id, lambda: http_ok(
        lambda: technologist(lab, dev_keys), "POST", f"/specimens/{t.barcode}/receipt",
        {"inspection": {"not_haemolysed": True, "not_lipaemic": True, "not_clotted": True,
                        "volume_sufficient": True, "right_tube": True,
                        "label_matches": True}})


async def confirm_over_http(lab, dev_keys):
    o, t = await ordered_tube(lab, dev_keys, ("K",))
    await receive(lab, dev_keys, t.barcode)
    await report_results(lab, dev_keys, t.barcode, obs("K", "4.2"))
    return o.order_id, lambda: http_ok(
        lambda: technologist(lab, dev_keys), "POST", f"/specimens/{t.barcode}/confirm")


async def verify_over_http(lab, dev_keys):
    o, t = await ordered_tube(lab, dev_keys, ("K",))
    await receive(lab, dev_keys, t.barcode)
    await report_results(lab, dev_keys, t.barcode, obs("K", "4.2"))
    await confirm(lab, dev_keys, t.barcode)
    return o.order_id, lambda: http_ok(
        lambda: physician(lab, dev_keys), "POST", f"/orders/{o.order_id}/verify")


async def amend_over_http(lab, dev_keys):
    o, t = await verified_order(lab, dev_keys, ("K",))
    return o.order_id, lambda: http_ok(
        lambda: physician(lab, dev_keys), "POST", f"/orders/{o.order_id}/amend",
        {"observation_id": f"{t.barcode}.K.1", "value": "4.3", "reason": "transcription_error"})


async def call_back_over_http(lab, dev_keys):
    o, raised = await _confirmed_critical(lab, dev_keys)
    return o.order_id, lambda: http_ok(
        lambda: technologist(lab, dev_keys), "POST",
        f"/critical-values/{raised['critical_id']}/call-backs",
        {"reached": "doc-17", "outcome": "confirmed_read_back"})


CASES: dict[str, Case] = {
    "intake LabOrderPlaced": order_placed,
    "intake SpecimenCollected": specimen_collected,
    "intake SpecimenDispatched": specimen_dispatched,
    "intake LabOrderCancelled": order_cancelled,
    "intake AnalyserResults": analyser_results_sent,
    "intake CriticalValueAck": critical_value_ack,
    "timer transit_overdue": transit_overdue_timer,
    "timer critical_escalation": critical_escalation_timer,
    "HTTP receipt": receipt_over_http,
    "HTTP confirm": confirm_over_http,
    "HTTP verify": verify_over_http,
    "HTTP amend": amend_over_http,
    "HTTP call-back": call_back_over_http,
}


async def _waiting_for_an_advisory_lock(lab) -> int:
    return await fetchval(
        lab, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
             " AND wait_event = 'advisory'"
             " AND application_name = current_setting('application_name')")


@pytest.mark.parametrize("case", list(CASES))
async def test_it_waits_while_the_order_is_locked(lab, dev_keys, case):
    order_id, run = await CASES[case](lab, dev_keys)
    async with lab.pool.acquire() as holder:
        tx = holder.transaction()
        await tx.start()
        try:
            await holder.execute(ORDER_LOCK, order_id)
            running = asyncio.create_task(run())

            async def waits() -> bool:
                if running.done():
                    running.result()  # its error, if it failed
                    raise AssertionError(f"{case} went ahead while the order was locked")
                return await _waiting_for_an_advisory_lock(lab) >= 1

            await until(waits, what=f"{case} waiting for the order's lock")
            await asyncio.sleep(0.2)
            assert not running.done(), f"{case} went ahead while the order was locked"
        finally:
            await tx.rollback()
    await asyncio.wait_for(running, 20)

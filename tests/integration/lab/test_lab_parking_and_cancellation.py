"""Out of order, never lost: records that arrive before what they depend on are
parked and applied later, refused only after the grace period; cancellation of
an order or some of its tests."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from labflow import ce_type, collected, order, payload, rejection_for
from yigongti_contracts.lab.codes import CancellationReason
from yigongti_contracts.lab.v1 import LabOrderCancelled, SpecimenDispatched
from yigongti_kit.timers import shift_clock


def dispatch(*barcodes: str) -> SpecimenDispatched:
    return SpecimenDispatched(
        shipment_id=f"SH-{uuid.uuid4().hex[:8]}", barcodes=barcodes, courier_id="courier-5",
        temperature_logger_id="logger-9", dispatched_at=datetime.now(UTC),
    )


def cancel(order_id: str, tests=None) -> LabOrderCancelled:
    return LabOrderCancelled(order_id=order_id, tests=tests,
                             reason=CancellationReason.clinical_change,
                             cancelled_by="doc-17", cancelled_at=datetime.now(UTC))


async def until(check, timeout: float = 20.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def for_order(order_id: str):
    return lambda r: payload(r).get("order_id") == order_id


async def test_dispatch_and_collection_before_the_order_are_applied_when_it_arrives(lab, dev_keys):
    o = order(dev_keys.institution_id)
    tube = collected(o)
    await lab.terminal.publish(dispatch(tube.barcode))   # before its collection
    await lab.terminal.publish(tube)                       # before its order
    await lab.terminal.publish(o)
    records = await lab.events.wait_for(for_order(o.order_id), count=3)
    assert [ce_type(r).split(".")[-2] for r in records] == [
        "accepted", "collection_recorded", "in_transit"]
    async with lab.pool.acquire() as conn:
        assert await conn.fetchval("SELECT state FROM specimens WHERE barcode = $1",
                                   tube.barcode) == "in_transit"
        assert await conn.fetchval("SELECT count(*) FROM parked") == 0


async def test_parked_record_is_refused_after_its_grace_period_and_kept(lab, dev_keys):
    orphan = collected(order(dev_keys.institution_id))     # its order never comes
    ce_id = await lab.terminal.publish(orphan)
    async with lab.pool.acquire() as conn:
        await until(lambda: conn.fetchval("SELECT count(*) FROM parked"))
        assert not lab.events.of_type("intake.rejected.v1")
        await shift_clock(conn, timedelta(hours=3))
    [answer] = await lab.events.wait_for(rejection_for(ce_id))
    assert payload(answer)["reason"] == "prerequisite_missing"
    assert payload(answer)["fields"] == [{"field": "order_id", "code": "not_found"}]
    async with lab.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM parked WHERE expired_at IS NOT NULL") == 1


async def test_cancelling_some_tests_then_the_rest_cancels_the_order(lab, dev_keys):
    o = order(dev_keys.institution_id, tests=("K", "CTNI", "CBC"))
    await lab.terminal.publish(o)
    await lab.terminal.publish(collected(o, tests=("K", "CTNI")))
    await lab.terminal.publish(cancel(o.order_id, tests=("CBC",)))
    await lab.terminal.publish(cancel(o.order_id))
    first, second = await lab.events.wait_for(
        lambda r: ce_type(r).endswith("tests.cancelled.v1") and for_order(o.order_id)(r), count=2)
    assert payload(first)["tests"] == ["CBC"] and payload(first)["order_cancelled"] is False
    assert sorted(payload(second)["tests"]) == ["CTNI", "K"]
    assert payload(second)["order_cancelled"] is True
    async with lab.pool.acquire() as conn:
        assert await conn.fetchval("SELECT state FROM specimens WHERE order_id = $1",
                                   o.order_id) == "cancelled"


async def test_cancelling_a_test_not_on_the_order_is_refused(lab, dev_keys):
    o = order(dev_keys.institution_id)
    await lab.terminal.publish(o)
    ce_id = await lab.terminal.publish(cancel(o.order_id, tests=("GLU",)))
    [answer] = await lab.events.wait_for(rejection_for(ce_id))
    assert payload(answer)["reason"] == "test_not_ordered"


async def test_dispatches_racing_their_collections_on_other_partitions_all_arrive(lab, dev_keys):
    """Collections (keyed by order) and dispatches (keyed by shipment) land on
    different partitions, handled side by side: a dispatch that finds no tube
    may park while the tube's collection is committing. None is left parked:
    every tube ends in transit, at once, not after the grace period."""
    orders = [order(dev_keys.institution_id) for _ in range(30)]
    tubes = [collected(o) for o in orders]
    for o in orders:
        await lab.terminal.publish(o)
    # Collection and dispatch of each tube back to back, so they race.
    await asyncio.gather(*(p for t in tubes for p in (
        lab.terminal.publish(t), lab.terminal.publish(dispatch(t.barcode)))))

    async def all_in_transit() -> bool:
        async with lab.pool.acquire() as conn:
            return await conn.fetchval(
                "SELECT count(*) FROM specimens WHERE barcode = ANY($1::text[])"
                " AND state = 'in_transit'", [t.barcode for t in tubes]) == len(tubes)

    await until(all_in_transit, timeout=30)
    async with lab.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM parked WHERE expired_at IS NULL") == 0
    assert not [r for r in lab.events.records if ce_type(r).endswith("intake.rejected.v1")]

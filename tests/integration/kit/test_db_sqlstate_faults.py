"""Database faults by SQLSTATE against the real PostgreSQL (issue 8 item 3):
a read-only database (a standby after failover) is waited out, never
dead-lettered; a record that always hits statement_timeout is answered after
a few rounds so its partition moves on; a timer is never dropped."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from kitflow import wait_until
from labflow import ce_type, order, payload, rejection_for
from yigongti_kit import timers
from yigongti_kit.db import create_pool


async def _raise_on_insert(sql, sqlstate: str, *, only_order: str | None = None) -> None:
    condition = f"NEW.order_id = '{only_order}'" if only_order else "true"
    await sql.execute(f"""
        CREATE OR REPLACE FUNCTION test_fault() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF {condition} THEN
                RAISE EXCEPTION 'injected' USING ERRCODE = '{sqlstate}';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER test_fault BEFORE INSERT ON orders
            FOR EACH ROW EXECUTE FUNCTION test_fault();""")


async def test_a_read_only_database_is_waited_out_and_nothing_is_dead_lettered(
    start_lab, dev_keys, sql,
):
    lab = await start_lab()
    await _raise_on_insert(sql, "25006")  # cannot execute INSERT in a read-only transaction
    orders = [order(dev_keys.institution_id) for _ in range(3)]
    for o in orders:
        await lab.terminal.publish(o)
    await wait_until(lambda: _failing(lab, "consumer"), what="consumer retrying")
    assert lab.events.of_type("intake.rejected.v1") == []
    await sql.execute("DROP TRIGGER test_fault ON orders")
    accepted = await lab.events.wait_for(
        lambda r: ce_type(r).endswith("order.accepted.v1"), count=3, timeout=30)
    assert sorted(payload(r)["order_id"] for r in accepted) == sorted(o.order_id for o in orders)
    assert lab.events.of_type("intake.rejected.v1") == []
    assert lab.dlq.records == []


async def test_a_record_that_always_times_out_is_answered_after_a_few_rounds(
    start_lab, dev_keys, sql,
):
    lab = await start_lab()
    slow = order(dev_keys.institution_id)
    await _raise_on_insert(sql, "57014", only_order=slow.order_id)  # statement timeout
    await lab.terminal.publish(slow)
    [answer] = await lab.events.wait_for(lambda r: ce_type(r).endswith("intake.rejected.v1")
                                         and payload(r)["key"] == slow.order_id, timeout=60)
    assert payload(answer)["reason"] == "processing_error"
    after = order(dev_keys.institution_id)
    await lab.terminal.publish(after)
    await lab.events.wait_for(lambda r: ce_type(r).endswith("order.accepted.v1")
                              and payload(r)["order_id"] == after.order_id)
    assert rejection_for  # the answer was found by its key above


async def test_a_timer_is_never_dropped_whatever_its_handler_raises(
    database_url, kit_schema, sql,
):
    calls: list[int] = []

    async def flaky(conn, row) -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise asyncpg.ReadOnlySQLTransactionError("a standby")  # infrastructure
        if len(calls) <= 8:
            raise ValueError("a bug, fixed later")  # more than the old five attempts

    pool = await create_pool(database_url, kit_schema)
    try:
        poller = timers.TimerPoller(pool, {"escalation": flaky}, interval=0.05)
        async with pool.acquire() as conn:
            await timers.schedule(conn, "escalation", "cv-1", after=timedelta(0))
        # Each round: fire what is due, then move the clock past any retry.
        while await sql.fetchval("SELECT fired_at IS NULL FROM timers") and len(calls) < 20:
            try:
                await poller.run_once()
            except asyncpg.ReadOnlySQLTransactionError:
                pass  # infrastructure: nothing fired, the timer stays due
            await timers.shift_clock(sql, timedelta(minutes=11))
        assert await sql.fetchval("SELECT fired_at IS NOT NULL FROM timers")
        assert len(calls) == 9
    finally:
        await pool.close()


async def _failing(lab, component: str) -> bool:
    return component in lab.runtime.health.failing()

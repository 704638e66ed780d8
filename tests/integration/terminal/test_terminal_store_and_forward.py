"""Township networks drop (issue 14): events captured while the broker is
unreachable wait on the terminal's disk, unsigned, and are sent in order once
the link returns, each with its effect exactly once. The link is cut with the
harness's proxy; the broker itself is never stopped (it keeps nothing across
a restart)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta

import harness
import pytest
from labflow import ce_type, collected, order, payload, rejection_for
from labjourney import new_patient
from yigongti_contracts.lab.v1 import CriticalValueAck
from yigongti_kit.terminal import build_record
from yigongti_terminal.client import TerminalClient, UnknownPatientOffline

TWO_HOURS = timedelta(hours=2)


def _for_order(o, suffix):
    return _for_aggregate(o.order_id, suffix)


def _for_aggregate(order_id: str, suffix: str):
    return lambda r: ce_type(r).endswith(suffix) and payload(r).get("order_id") == order_id


def _age_queue(config, by: timedelta) -> None:
    """Simulate time passing on the terminal: the queued events were captured `by` ago."""
    db = sqlite3.connect(config.queue_path)
    with db:
        for seq, captured in db.execute("SELECT seq, captured_at FROM outbox").fetchall():
            at = datetime.fromisoformat(captured) - by
            db.execute("UPDATE outbox SET captured_at = ? WHERE seq = ?", (at.isoformat(), seq))
    db.close()


async def test_captured_offline_two_hours_before_the_link_returns_is_accepted_once(
        clinic, dev_keys):
    client = clinic.client
    patient = new_patient()
    online = await client.submit("lab", order(dev_keys.institution_id, tests=("K",),
                                              patient_ref=patient))
    assert online.sent and online.waiting == 0  # online: sent at once, patient now known
    await clinic.events.wait_for(_for_aggregate(online.item.aggregate, "order.accepted.v1"))

    await clinic.proxy.cut()
    captured_at = datetime.now(UTC) - TWO_HOURS
    o = order(dev_keys.institution_id, tests=("K",), patient_ref=patient, ordered_at=captured_at)
    first = await client.submit("lab", o)
    tube = collected(o, tests=("K",))
    second = await client.submit("lab", tube.model_copy(update={"collected_at": captured_at}))
    assert (first.sent, second.sent) == (False, False)
    assert [q.ce_id for q in client.queue.waiting()] == [first.ce_id, second.ce_id]
    # Unsigned on disk: nothing but the payload and its ce_id is kept.
    stored = sqlite3.connect(clinic.config.queue_path).execute(
        "SELECT * FROM outbox WHERE ce_id = ?", (first.ce_id,)).fetchone()
    assert not any(isinstance(v, str) and "signature" in v for v in stored)
    # Offline, a patient the terminal does not know cannot be queued.
    with pytest.raises(UnknownPatientOffline):
        await client.submit("lab", order(dev_keys.institution_id, tests=("K",),
                                         patient_ref=new_patient()))
    assert len(client.queue.waiting()) == 2

    _age_queue(clinic.config, TWO_HOURS)
    # The control: the same record signed at capture, two hours ago, is never taken.
    stale = build_record(client.signer, o, ce_id=first.ce_id, time=captured_at)
    await clinic.proxy.restore()

    report = await client.flush()
    assert [q.ce_id for q in report.sent] == [first.ce_id, second.ce_id]
    assert report.waiting == 0 and report.link_error is None
    accepted = await clinic.events.wait_for(_for_order(o, "order.accepted.v1"))
    await clinic.events.wait_for(_for_order(o, "collection_recorded.v1"))

    # An unclear answer makes the terminal send again: the same ce_id and value,
    # a new signature. The service applies it once; so with the stale copy.
    db = sqlite3.connect(clinic.config.queue_path)
    with db:
        db.execute("UPDATE outbox SET sent_at = NULL WHERE ce_id = ?", (first.ce_id,))
    db.close()
    assert [q.ce_id for q in (await client.flush()).sent] == [first.ce_id]
    await harness.produce(next(iter(clinic.config.broker_route)), clinic.topics["lab.intake.v1"],
                          stale.key, stale.value, stale.headers)
    # Behind both on the order's partition: an acknowledgement of a critical value
    # that was never raised, refused at once. Once it is answered, both were read.
    probe = await client.submit("lab", CriticalValueAck(
        order_id=o.order_id, critical_id="CV-none", received_by="nurse-3",
        read_back_confirmed=True, acknowledged_at=datetime.now(UTC)))
    await clinic.events.wait_for(rejection_for(probe.ce_id))

    assert len([r for r in clinic.events.records
                if _for_order(o, "order.accepted.v1")(r)]) == 1
    assert payload(accepted[0])["order_id"] == o.order_id
    assert [payload(r)["rejected_id"] for r in clinic.events.records
            if ce_type(r).endswith("intake.rejected.v1")] == [probe.ce_id]
    async with clinic.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM orders WHERE order_id = $1",
                                   o.order_id) == 1
        # Its capture time is kept in the event's own field.
        ordered = await conn.fetchval("SELECT ordered_at FROM orders WHERE order_id = $1",
                                      o.order_id)
    assert abs((ordered - captured_at).total_seconds()) < 1


async def test_a_flush_waits_while_another_holds_the_queue_and_nothing_goes_twice(
        clinic, dev_keys):
    """The queue's lock rule (queue.py): one flush at a time per terminal. With
    the lock held (as a flush in another process holds it), two flushes wait;
    released, they send each waiting event once between them, in order."""
    patient = new_patient()
    clinic.client.queue.remember(patient)
    await clinic.proxy.cut()
    orders = [order(dev_keys.institution_id, tests=("K",), patient_ref=patient)
              for _ in range(3)]
    captured = [await clinic.client.submit("lab", o) for o in orders]
    await clinic.proxy.restore()

    other = TerminalClient(clinic.config)  # a second process on the same terminal
    try:
        async with other.queue.flush_lock():
            flushes = [asyncio.create_task(clinic.client.flush()),
                       asyncio.create_task(other.flush())]
            await asyncio.sleep(0.5)
            assert not any(f.done() for f in flushes)
        reports = await asyncio.gather(*flushes)
    finally:
        other.close()
    # One of them sent all three, in capture order; the other found nothing waiting.
    assert sorted(len(r.sent) for r in reports) == [0, 3]
    assert [q.ce_id for r in reports for q in r.sent] == [c.ce_id for c in captured]
    for o in orders:
        await clinic.events.wait_for(_for_order(o, "order.accepted.v1"))
    await asyncio.sleep(0.5)
    assert sum(1 for r in clinic.events.records
               if ce_type(r).endswith("order.accepted.v1")) == 3

"""The lab's one locking rule: the order lock.

THE RULE. A transaction that changes anything of an order (its tests, tubes,
results, report, critical values, charges, timers) first takes that order's
lock, and holds it until it commits:

    SELECT pg_advisory_xact_lock(hashtextextended('order' || chr(31) || order_id, 0))

(`lock_order`). Only then does it read what it decides on and lock or change
the order's rows (orders, specimens, order_tests, results, critical_values, in
any order: nobody else can be at them). Last, it may take a parking lock
through parking.release (("specimen", barcode) when a tube is collected,
("received", barcode) when it is received); parking locks are never held
while an order lock is waited for, except as said below for a tube that is
not yet known.

- Intake handlers (in the kit's consumer transaction): LabOrderPlaced (before
  it inserts the order), SpecimenCollected, LabOrderCancelled (handlers.py),
  AnalyserResults (results.py) and CriticalValueAck (critical.py) lock their
  one order; SpecimenDispatched locks the orders of the tubes it names that
  are known, in ascending order id (`lock_tubes`).
- HTTP actions: receipt (receipt.receive), technical confirmation
  (results.confirm), verification and amendment (reports.lock_order) and
  critical-value call-backs (critical.record_call_back) lock the order of the
  tube, report or critical value they act on. A physician first tries the
  report's own lock ("report", order_id), without waiting: a second physician
  at the same report gets a 409 at once; then they wait for the order lock
  like everyone else.
- Timer handlers: the transit-overdue alarm (receipt.on_overdue) and the
  critical-value escalation (critical.on_escalation) lock the order. The
  parked-record expiry (parking.on_expiry) changes no order and takes none.
- Reads (the GET routes, the feed) take no lock.

How a key becomes an order id: a barcode's and a critical value's order never
change once written, so a plain read finds it (`lock_tube`, `lock_critical`).
A tube not known yet locks nothing: its record parks under ("specimen",
barcode) (parking.run takes that lock and looks again); if the tube appears
meanwhile, the record then locks the tube's order while holding the parking
lock. That order is only ever held together with that parking lock by the
tube's collection, which has committed by then, so no cycle forms.

A record parked waiting for an order takes the order's own lock (it is the
parking key ("order", order_id)), and one parked waiting for its tube's
receipt looks again under the order lock (Park.lock), which the receipt holds.

Deadlocks: HTTP actions and timers lock one order. A consumer transaction may
apply up to 25 records (kit batches.py) and holds each one's order lock until
it commits, so two partitions can take two orders' locks in opposite orders;
PostgreSQL then aborts one (SQLSTATE 40P01) and the kit reads that partition
again. A dispatch whose unknown tube appears while it is parked (above) may
also lock out of ascending order; that is left to the same detection.

Why an advisory lock and not the orders row (SELECT … FOR UPDATE): the lock
must exist before the order does (LabOrderPlaced, records parked for it), and
it does not hold up the foreign-key checks of rows other transactions insert.
Why one lock for everything: each path used to lock a row of its own
(confirmation none, a cancellation the orders row, results the tube row), so a
cancellation overwrote a confirmation it never saw and a re-run was stored
beside a line just confirmed (issue 8 item 10).
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 0))"
_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 0))"


async def lock(conn: asyncpg.Connection, kind: str, key: str) -> None:
    """The transaction lock on (kind, key): ("order", id) is the order lock;
    parking.py takes the others."""
    await conn.execute(_LOCK, kind, key)


async def lock_order(conn: asyncpg.Connection, order_id: str) -> None:
    await lock(conn, "order", order_id)


async def lock_orders(conn: asyncpg.Connection, order_ids: Iterable[str]) -> None:
    """Several orders' locks, in ascending order id."""
    for order_id in sorted(set(order_ids)):
        await lock_order(conn, order_id)


async def lock_tube(conn: asyncpg.Connection, barcode: str) -> str | None:
    """Lock the order of the tube; its order id, or None for an unknown tube."""
    order_id = await conn.fetchval("SELECT order_id FROM specimens WHERE barcode = $1", barcode)
    if order_id is not None:
        await lock_order(conn, order_id)
    return order_id


async def lock_tubes(conn: asyncpg.Connection, barcodes: Iterable[str]) -> dict[str, str]:
    """Lock the orders of the known tubes among `barcodes`, in ascending order
    id; {barcode: order id} of those."""
    rows = await conn.fetch("SELECT barcode, order_id FROM specimens WHERE barcode = ANY($1)",
                            list(barcodes))
    orders = {r["barcode"]: r["order_id"] for r in rows}
    await lock_orders(conn, orders.values())
    return orders


async def lock_critical(conn: asyncpg.Connection, critical_id: str) -> str | None:
    """Lock the order of the critical value; its order id, or None if unknown."""
    order_id = await conn.fetchval(
        "SELECT order_id FROM critical_values WHERE critical_id = $1", critical_id)
    if order_id is not None:
        await lock_order(conn, order_id)
    return order_id


async def try_lock_report(conn: asyncpg.Connection, order_id: str) -> bool:
    """The report's physician lock, if free now (True); never waits."""
    return await conn.fetchval(_TRY_LOCK, "report", order_id)

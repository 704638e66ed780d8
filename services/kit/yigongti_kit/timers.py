"""Durable timers in PostgreSQL, fired by a poller on the database clock.

A timer is (kind, key) → due_at. The poller takes due timers with
`FOR UPDATE SKIP LOCKED`, so several pollers (replicas) never fire one twice;
the handler runs in the same transaction as the "fired" mark, so a crash
before commit leaves the timer due. A handler may schedule the same timer
again (escalation that repeats). Tests move time with `shift_clock`.

A timer is never dropped: an infrastructure fault (db.fault_kind) leaves it
due for the next poll; any other failure moves it later, 2, 4, 8… seconds up
to ten minutes, for as long as it fails, with the error recorded and
counted (a critical value's escalation must fire once the cause is fixed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context

from .db import fault_kind, is_infra_error
from .telemetry import background_context, metrics

log = logging.getLogger(__name__)
tracer = trace.get_tracer("yigongti.timers")

MAX_RETRY_S = 600.0  # a failing timer is tried again at least this often

TimerHandler = Callable[[asyncpg.Connection, asyncpg.Record], Awaitable[None]]


async def schedule(
    conn: asyncpg.Connection,
    kind: str,
    key: str,
    *,
    at: datetime | None = None,
    after: timedelta | None = None,
    payload: dict[str, Any] | None = None,
) -> None:
    """Set (or move) the timer (kind, key). Give `at` or `after` (from db_now())."""
    if (at is None) == (after is None):
        raise ValueError("give exactly one of at= or after=")
    # The trace that set the timer continues when it fires.
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    await conn.execute(
        """INSERT INTO timers (kind, key, due_at, payload, traceparent, tracestate)
           VALUES ($1, $2, coalesce($3, db_now() + $4::interval), $5, $6, $7)
           ON CONFLICT (kind, key) DO UPDATE
             SET due_at = excluded.due_at, payload = excluded.payload,
                 traceparent = excluded.traceparent, tracestate = excluded.tracestate,
                 fired_at = NULL, cancelled_at = NULL, attempts = 0, last_error = NULL""",
        kind,
        key,
        at,
        after,
        payload or {},
        carrier.get("traceparent"),
        carrier.get("tracestate"),
    )


async def cancel(conn: asyncpg.Connection, kind: str, key: str) -> bool:
    status = await conn.execute(
        """UPDATE timers SET cancelled_at = db_now()
           WHERE kind = $1 AND key = $2 AND fired_at IS NULL AND cancelled_at IS NULL""",
        kind,
        key,
    )
    return status.endswith(" 1")


async def db_now(conn: asyncpg.Connection) -> datetime:
    return await conn.fetchval("SELECT db_now()")


async def shift_clock(conn: asyncpg.Connection, by: timedelta) -> None:
    """Move the database clock forward (tests only; production never sets it)."""
    await conn.execute(
        """INSERT INTO clock_offset (only_row, shift) VALUES (true, $1)
           ON CONFLICT (only_row) DO UPDATE SET shift = clock_offset.shift + excluded.shift""",
        by,
    )


class TimerPoller:
    def __init__(
        self,
        pool: asyncpg.Pool,
        handlers: dict[str, TimerHandler],
        *,
        interval: float = 0.5,
        batch_size: int = 100,
        on_ready=None,
    ) -> None:
        self.pool = pool
        self.handlers = handlers
        self.interval = interval
        self.batch_size = batch_size
        # Readiness callback (component, ready, reason), as the consumer's.
        self.on_ready = on_ready or (lambda *_: None)
        self.fired = 0
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        background_context()
        while not self._stopping.is_set():
            try:
                fired = await self.run_once()
                self.on_ready("timers", True, "")
            except Exception as exc:  # noqa: BLE001 - keep polling through faults
                if not is_infra_error(exc):
                    log.exception("timer poller error")
                else:
                    self.on_ready("timers", False, f"infrastructure: {type(exc).__name__}")
                fired = 0
            if fired < self.batch_size:
                try:
                    await asyncio.wait_for(self._stopping.wait(), self.interval)
                except TimeoutError:
                    pass

    async def run_once(self) -> int:
        """Fire what is due now; returns how many fired."""
        fired: list[str] = []
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT * FROM timers
                   WHERE fired_at IS NULL AND cancelled_at IS NULL AND due_at <= db_now()
                     AND kind = ANY($2::text[])
                   ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED""",
                self.batch_size,
                list(self.handlers),
            )
            for row in rows:
                # Marked fired before the handler so that it may schedule itself again.
                await conn.execute("UPDATE timers SET fired_at = db_now() WHERE id = $1", row["id"])
                # A fresh context: the poller's own SQL is untraced (background_context),
                # the handler's belongs to the trace that set the timer.
                parent = propagate.extract(
                    {k: row[k] for k in ("traceparent", "tracestate") if row[k]}, context=Context())
                token = otel_context.attach(parent)
                try:
                    with tracer.start_as_current_span(f"timer {row['kind']}"):
                        async with conn.transaction():
                            await self.handlers[row["kind"]](conn, row)
                    fired.append(row["kind"])
                except Exception as exc:
                    if fault_kind(exc) in ("infrastructure", "authentication"):
                        raise  # the whole round again next poll: nothing fired
                    log.exception("timer %s failed", row["kind"])
                    await self._retry_later(conn, row, exc)
                finally:
                    otel_context.detach(token)
        # Counted after the commit: only what this poller really fired.
        self.fired += len(fired)
        for kind in fired:
            metrics().timers_fired.add(1, {"kind": kind})
        return len(fired)

    async def _retry_later(self, conn: asyncpg.Connection, row: asyncpg.Record, exc: Exception):
        attempts = row["attempts"] + 1
        metrics().timers_failed.add(1, {"kind": row["kind"], "error": type(exc).__name__})
        await conn.execute(
            """UPDATE timers SET fired_at = NULL, attempts = $2, last_error = $3,
                      due_at = db_now() + make_interval(secs => $4)
               WHERE id = $1""",
            row["id"], attempts, type(exc).__name__, float(min(2 ** attempts, MAX_RETRY_S)),
        )

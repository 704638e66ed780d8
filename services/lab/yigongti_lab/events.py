"""Where the lab's events go: its outbox, under its registered events topic."""

from __future__ import annotations

import asyncpg
from yigongti_contracts.base import StrictModel
from yigongti_kit.outbox import add_events

SERVICE = "lab"
SOURCE = "/yigongti/lab"
EVENTS_TOPIC = "lab.events.v1"
AGGREGATE = "lab_order"


async def emit(conn: asyncpg.Connection, event: StrictModel, *, key: str | None = None) -> str:
    """Store `event` in the outbox in the caller's transaction; returns its ce_id."""
    (ce_id,) = await emit_all(conn, [event], key=key)
    return ce_id


async def emit_all(conn: asyncpg.Connection, events: list[StrictModel], *,
                   key: str | None = None) -> list[str]:
    """Store several events, in order, in one round trip."""
    return await add_events(conn, [(e, key) for e in events], topic=EVENTS_TOPIC, source=SOURCE,
                            aggregatetype=AGGREGATE)

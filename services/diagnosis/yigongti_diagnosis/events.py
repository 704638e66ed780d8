"""Where the diagnosis service's events go: its outbox, under its events topic."""

from __future__ import annotations

import asyncpg
from yigongti_contracts.base import StrictModel
from yigongti_kit.outbox import add_events

SERVICE = "diagnosis"
SOURCE = "/yigongti/diagnosis"
EVENTS_TOPIC = "diagnosis.events.v1"
AGGREGATE = "diagnosis_request"


async def emit(conn: asyncpg.Connection, *events: StrictModel) -> list[str]:
    """Store `events`, in order, in the caller's transaction; their ce_ids."""
    return await add_events(conn, [(e, None) for e in events], topic=EVENTS_TOPIC,
                            source=SOURCE, aggregatetype=AGGREGATE)

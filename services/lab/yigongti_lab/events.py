"""Where the lab's events go: its outbox, under its registered events topic."""

from __future__ import annotations

import asyncpg
from yigongti_contracts.base import StrictModel
from yigongti_kit.outbox import add_event

SERVICE = "lab"
SOURCE = "/yigongti/lab"
EVENTS_TOPIC = "lab.events.v1"
AGGREGATE = "lab_order"


async def emit(conn: asyncpg.Connection, event: StrictModel, *, key: str | None = None) -> str:
    """Store `event` in the outbox in the caller's transaction; returns its ce_id."""
    return await add_event(conn, event, topic=EVENTS_TOPIC, source=SOURCE,
                           aggregatetype=AGGREGATE, key=key)

"""Where the settlement's events go: its outbox, under its registered events topic."""

from __future__ import annotations

import asyncpg
from yigongti_contracts.base import StrictModel
from yigongti_kit.outbox import add_events, outbox_arguments

SOURCE = "/yigongti/settlement"
EVENTS_TOPIC = "settlement.events.v1"
AGGREGATE = "settlement"


async def emit_all(conn: asyncpg.Connection, events: list[StrictModel]) -> list[str]:
    """Store events, in order, in the caller's transaction; their ce_ids."""
    if not events:
        return []
    return await add_events(conn, [(e, None) for e in events], topic=EVENTS_TOPIC,
                            source=SOURCE, aggregatetype=AGGREGATE)


def events_arguments(events: list[StrictModel]) -> list[list]:
    """The arguments of the kit's `outbox_cte` for these events of ours."""
    return outbox_arguments([(e, None) for e in events], topic=EVENTS_TOPIC, source=SOURCE,
                            aggregatetype=AGGREGATE)

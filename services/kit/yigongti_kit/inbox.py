"""Idempotent consumption: the processed-event table, written in the handler's
transaction, makes each event's effect happen once however often Kafka
delivers it. `(ce_source, ce_id)` identifies an event; the same id with a
different payload is flagged as a conflict, never silently skipped."""

from __future__ import annotations

import hashlib
from typing import Literal

import asyncpg

Claim = Literal["new", "duplicate", "conflict"]


def payload_hash(ce_type: str, value: bytes) -> str:
    return hashlib.sha256(ce_type.encode() + b"\n" + value).hexdigest()


async def claim(conn: asyncpg.Connection, source: str, ce_id: str, digest: str) -> Claim:
    inserted = await conn.fetchval(
        """INSERT INTO processed_events (ce_source, ce_id, payload_hash) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING RETURNING true""",
        source,
        ce_id,
        digest,
    )
    if inserted:
        return "new"
    first = await conn.fetchval(
        "SELECT payload_hash FROM processed_events WHERE ce_source = $1 AND ce_id = $2",
        source,
        ce_id,
    )
    return "duplicate" if first == digest else "conflict"


async def already_applied(conn: asyncpg.Connection, source: str, ce_id: str, digest: str) -> bool:
    """True when this event, with this very payload, was handled before."""
    return bool(await conn.fetchval(
        "SELECT true FROM processed_events WHERE ce_source = $1 AND ce_id = $2"
        " AND payload_hash = $3",
        source,
        ce_id,
        digest,
    ))


async def record_conflict(
    conn: asyncpg.Connection,
    *,
    source: str,
    ce_id: str,
    ce_type: str | None,
    digest: str,
    topic: str,
    partition: int,
    offset: int,
) -> None:
    await conn.execute(
        """INSERT INTO inbox_conflicts
               (ce_source, ce_id, ce_type, first_hash, other_hash, topic, kafka_partition, kafka_offset)
           SELECT ce_source, ce_id, $3, payload_hash, $4, $5, $6, $7
           FROM processed_events WHERE ce_source = $1 AND ce_id = $2""",
        source,
        ce_id,
        ce_type,
        digest,
        topic,
        partition,
        offset,
    )


async def forget(conn: asyncpg.Connection, source: str, ce_id: str) -> None:
    """Let (source, ce_id) be taken as new again: for a record that was claimed
    but, in the end, refused with no effect (a parked record refused when its
    grace period ended). A resend of it, its cause removed, is then applied
    instead of being dropped as a duplicate."""
    await conn.execute("DELETE FROM processed_events WHERE ce_source = $1 AND ce_id = $2",
                       source, ce_id)

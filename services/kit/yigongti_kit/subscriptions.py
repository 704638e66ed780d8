"""Reading other services' events (DESIGN §2, §6): a service declares in its
`ServiceSpec` which owners' events topics it reads and one handler per event
type it cares about:

    Subscription("diagnosis", {CriticalFindingRaised.CE_TYPE: on_critical_finding})

Each subscription is a FastStream batch subscriber on `<owner>.events.v1`,
group `<consumer group>.<owner>.events.v1`, starting from the earliest retained
offset (a service deployed after the owner still reads what was published
before it, for as long as the topic keeps it). The guarantees are the
intake's (`batches.py`): the inbox on (ce_source, ce_id), one transaction with
the handler's effects and its outbox rows, offsets committed after the
database commit, infrastructure faults paused and retried.

A record is, in order:
- dead-lettered (on this service's own dead-letter topic, never the owner's)
  when it cannot be decoded: bad headers, malformed JSON, too large;
- held as `foreign_source` when the owner cannot have written it (its
  ce_source is not `/yigongti/<owner>`, or its type is not one the owner
  publishes): counted, never applied;
- skipped and counted when no handler takes its type;
- read with a tolerant view of the owner's model (unknown fields ignored);
  held as `schema_violation` when even that refuses it;
- applied once (the inbox), or held: `Park(kind, key)` from the handler parks
  it until `release(conn, kind, key)` (the timer poller applies it again),
  `Unapplicable(code)` holds it with that reason, and a handler bug, after
  its retries, holds it as `processing_error`.
Held events keep the whole record; `yigongti-events reapply` runs them
through this path again once the cause is fixed. Nothing here answers with
`IntakeRejected`: that is for intake.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord
from pydantic import ValidationError
from yigongti_contracts.common import field_errors
from yigongti_contracts.envelope import EnvelopeError, from_headers
from yigongti_contracts.registry import published_by
from yigongti_contracts.views import tolerant_view

from . import dead_letters, inbox, timers
from .batches import BatchHandler, Delivery, ReadySink, traced, undo

log = logging.getLogger(__name__)

RETRY_TIMER = "kit.held_event.retry"  # a parked event whose prerequisite arrived
EXPIRY_TIMER = "kit.held_event.expiry"  # a parked event whose grace period ended
DEFAULT_PARK_GRACE = timedelta(hours=1)  # assumed: a stalled upstream shows within an hour


class Park(Exception):
    """Raised by a subscription handler: the event refers to something not here
    yet (kind, key). It is applied again when `release(conn, kind, key)` runs."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"waiting for {kind}")
        self.kind = kind
        self.key = key


class Unapplicable(Exception):
    """Raised by a subscription handler: the event cannot be applied, for a
    reason (a code) and fields (paths and codes, never values)."""

    def __init__(self, code: str, fields: list[tuple[str, str]] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.fields = fields or []


EventHandler = Callable[[Delivery], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """The events of `owner` a service reads, one handler per ce_type."""

    owner: str
    handlers: Mapping[str, EventHandler]
    park_grace: timedelta = DEFAULT_PARK_GRACE
    # None: the broker kind's fetch wait; more for events no one waits on
    # (kafka.consumer_tuning): fewer empty polls.
    fetch_max_wait_ms: int | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.handlers) - set(published_by(self.owner)))
        if unknown:
            raise ValueError(f"{self.owner} publishes no {', '.join(unknown)}")


@dataclass
class _Held:
    status: str
    reason: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    waiting: tuple[str, str] | None = None


class SubscriptionConsumer(BatchHandler):
    def __init__(self, *, pool: asyncpg.Pool, subscription: Subscription, topic: str,
                 dlq_topic: str, service: str, source: str, events_topic: str,
                 aggregatetype: str, max_record_bytes: int,
                 on_ready: ReadySink | None = None) -> None:
        super().__init__(pool=pool, service=service, component=f"subscription:{topic}",
                         source=source, events_topic=events_topic,
                         aggregatetype=aggregatetype, on_ready=on_ready)
        self.subscription = subscription
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.owner_source = f"/yigongti/{subscription.owner}"
        self.owner_types = published_by(subscription.owner)
        self.max_record_bytes = max_record_bytes

    async def give_up(self, conn: asyncpg.Connection, record: ConsumerRecord) -> str:
        await self._hold(conn, record, _Held("unapplied", "processing_error"))
        return "processing_error"

    async def process(self, conn: asyncpg.Connection, record: ConsumerRecord) -> str:
        return await traced(record, lambda span: self._process(conn, record, span))

    async def _process(self, conn: asyncpg.Connection, record: ConsumerRecord, span) -> str:
        if len(record.value or b"") > self.max_record_bytes:
            return await self._dead_letter(conn, record, "oversized", [("value", "max_bytes")])
        try:
            envelope = from_headers(record.headers or [])
        except EnvelopeError as exc:
            return await self._dead_letter(conn, record, exc.code,
                                           [(name, exc.code) for name in exc.fields])
        if envelope.source != self.owner_source or envelope.type not in self.owner_types:
            await self._hold(conn, record, _Held("unapplied", "foreign_source"), envelope)
            return "foreign_source"
        handler = self.subscription.handlers.get(envelope.type)
        if handler is None:
            return "skipped"
        if span is not None:
            span.set_attribute("cloudevents.event_type", envelope.type)
        view = tolerant_view(self.owner_types[envelope.type])
        try:
            event = view.model_validate_json(record.value or b"", strict=True)
        except ValidationError as exc:
            errors = exc.errors(include_input=False, include_url=False)
            if any(e["type"] == "json_invalid" for e in errors):
                return await self._dead_letter(conn, record, "malformed_json",
                                               [("value", "json")])
            fields = [(f.field, f.code) for f in field_errors(exc)]
            await self._hold(conn, record, _Held("unapplied", "schema_violation", fields),
                             envelope)
            return "schema_violation"
        except (ValueError, RecursionError):
            return await self._dead_letter(conn, record, "malformed_json", [("value", "json")])

        digest = inbox.payload_hash(envelope.type, record.value or b"")
        delivery = Delivery(conn=conn, envelope=envelope, event=event, record=record,
                            consumer=self)
        locked = False
        while True:
            await conn.execute("SAVEPOINT subscription_record")
            try:
                claim = await inbox.claim(conn, envelope.source, envelope.id, digest)
                if claim == "duplicate":
                    return "duplicate"
                if claim == "conflict":
                    await inbox.record_conflict(
                        conn, source=envelope.source, ce_id=envelope.id, ce_type=envelope.type,
                        digest=digest, topic=record.topic, partition=record.partition,
                        offset=record.offset)
                    return "conflict"
                await handler(delivery)
                return "applied"
            except Park as wait:
                await conn.execute("ROLLBACK TO SAVEPOINT subscription_record")
                if not locked:
                    # The prerequisite may be committing right now on another
                    # partition: take the lock `release` takes, and look again.
                    await _lock(conn, wait.kind, wait.key)
                    locked = True
                    continue
                await self._hold(conn, record, _Held("parked", "waiting",
                                                     waiting=(wait.kind, wait.key)), envelope)
                return "parked"
            except Unapplicable as exc:
                await conn.execute("ROLLBACK TO SAVEPOINT subscription_record")
                await self._hold(conn, record, _Held("unapplied", exc.code, exc.fields),
                                 envelope)
                return exc.code
            except Exception:
                # Undone whatever it was: the caller retries the record (a bug) or
                # the batch (a fault of the database or the broker).
                await undo(conn, "subscription_record")
                raise

    async def _dead_letter(self, conn: asyncpg.Connection, record: ConsumerRecord, code: str,
                           fields: list[tuple[str, str]]) -> str:
        await dead_letters.store(conn, record, dlq_topic=self.dlq_topic, error=code,
                                 fields=fields, consumer=self.service)
        return code

    async def _hold(self, conn: asyncpg.Connection, record: ConsumerRecord, held: _Held,
                    envelope=None) -> None:
        waiting_kind, waiting_key = held.waiting or (None, None)
        held_id = await conn.fetchval(
            """INSERT INTO held_events (subscription, topic, kafka_partition, kafka_offset,
                   record_key, record_value, headers, record_timestamp, ce_source, ce_id,
                   ce_type, status, reason, fields, waiting_kind, waiting_key)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
               ON CONFLICT (topic, kafka_partition, kafka_offset) DO UPDATE
                 SET status = excluded.status, reason = excluded.reason,
                     fields = excluded.fields, waiting_kind = excluded.waiting_kind,
                     waiting_key = excluded.waiting_key, settled_at = NULL
               RETURNING id""",
            self.subscription.owner, record.topic, record.partition, record.offset, record.key,
            # A forged record is kept for ops without its payload.
            None if held.reason == "foreign_source" else record.value,
            dead_letters.encode_headers(record.headers),
            record.timestamp,
            envelope.source if envelope else None, envelope.id if envelope else None,
            envelope.type if envelope else None, held.status, held.reason,
            [list(f) for f in held.fields[:50]], waiting_kind, waiting_key,
        )
        if held.status == "parked":
            await timers.schedule(conn, EXPIRY_TIMER, str(held_id),
                                  after=self.subscription.park_grace)
        log.info("%s: held %s (%s) at %s-%d@%d", self.component, held.status, held.reason,
                 record.topic, record.partition, record.offset)

    # -- held events, applied again ------------------------------------------------

    async def reapply(self, conn: asyncpg.Connection, row: asyncpg.Record) -> str:
        """Run a held event through `process` again (in the caller's transaction)."""
        outcome = await self.process(conn, as_record(row))
        if outcome in ("applied", "duplicate", "skipped"):
            await conn.execute(
                "UPDATE held_events SET status = 'reapplied', settled_at = db_now() WHERE id = $1",
                row["id"])
        return outcome


def as_record(row: asyncpg.Record) -> ConsumerRecord:
    """A held event as the ConsumerRecord it arrived as."""
    return ConsumerRecord(
        topic=row["topic"], partition=row["kafka_partition"], offset=row["kafka_offset"],
        timestamp=row["record_timestamp"], timestamp_type=0, key=row["record_key"],
        value=row["record_value"], checksum=None, serialized_key_size=-1,
        serialized_value_size=-1, headers=tuple(dead_letters.decode_headers(row["headers"])))


async def _lock(conn: asyncpg.Connection, kind: str, key: str) -> None:
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('held:' || $1 || chr(31) || $2, 0))",
        kind, key)


async def release(conn: asyncpg.Connection, kind: str, key: str) -> int:
    """`kind` `key` now exists: the events parked waiting for it are applied
    again soon (by the timer poller, after this transaction commits). Call it
    in the transaction that records the prerequisite."""
    await _lock(conn, kind, key)
    ids = await conn.fetch(
        """SELECT id FROM held_events
           WHERE status = 'parked' AND waiting_kind = $1 AND waiting_key = $2""", kind, key)
    for row in ids:
        await timers.schedule(conn, RETRY_TIMER, str(row["id"]), after=timedelta(0))
    return len(ids)


def timer_handlers(consumers: Mapping[str, SubscriptionConsumer]) -> dict[str, Any]:
    """The kit's timers for held events, given the service's subscription
    consumers by owner."""

    async def retry(conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
        row = await conn.fetchrow(
            "SELECT * FROM held_events WHERE id = $1 AND status = 'parked' FOR UPDATE",
            int(timer["key"]))
        if row is None or row["subscription"] not in consumers:
            return
        await timers.cancel(conn, EXPIRY_TIMER, str(row["id"]))
        await consumers[row["subscription"]].reapply(conn, row)

    async def expire(conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
        await conn.execute(
            """UPDATE held_events SET status = 'unapplied', reason = 'prerequisite_missing',
                      fields = jsonb_build_array(jsonb_build_array(waiting_kind, 'not_found'))
               WHERE id = $1 AND status = 'parked'""", int(timer["key"]))

    return {RETRY_TIMER: retry, EXPIRY_TIMER: expire}


def describe(row: asyncpg.Record) -> dict[str, Any]:
    """A held event for listing: coordinates, ids and codes, never the payload."""
    return {
        "id": row["id"], "status": row["status"], "reason": row["reason"],
        "fields": row["fields"], "subscription": row["subscription"],
        "coordinates": f"{row['topic']}[{row['kafka_partition']}]@{row['kafka_offset']}",
        "ce_type": row["ce_type"], "ce_id": row["ce_id"],
        "waiting": f"{row['waiting_kind']}:{row['waiting_key']}" if row["waiting_kind"] else None,
        "held_at": row["held_at"].isoformat(),
    }

"""Transactional outbox: events are written with the change that caused them,
and one relay per service publishes them to Kafka in order.

`add_event` runs inside the caller's transaction: the `ce_id` is fixed there
and never regenerated, and the current trace context is stored so the trace
crosses the outbox. The per-aggregate `ce_aggseq` is given by the relay, the
only writer of the counters, in outbox order, and stored with the "sent" mark:
a writer takes no counter lock, and a row updated once. A row published again
after a relay crash gets the same number, unless a row of its aggregate that
was still uncommitted then commits before the restart (it comes first in
outbox order): a consumer sees the copy's ce_id twice either way.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidMessageError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from yigongti_contracts.base import StrictModel
from yigongti_contracts.envelope import Envelope, to_headers
from yigongti_contracts.topics import topic_name

from . import dead_letters
from .db import connect, is_infra_error
from .faults import fault_point
from .telemetry import background_context, current_trace_headers, metrics, spans_exported

log = logging.getLogger(__name__)
tracer = trace.get_tracer("yigongti.outbox")

# What the broker refuses about one record, however often it is sent.
_RECORD_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError,
                  InvalidMessageError, CorruptRecordException)

_INSERT = """
INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, topic, source, subject,
                    traceparent, tracestate)
VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8, $9, $10)
"""

# Published rows: marked sent with the ce_aggseq they were published with, and
# their aggregates' counters moved on (outbox_sequence outlives pruned rows).
_MARK_SENT = """
WITH sent AS (
    -- seq = ANY(…), not a join with unnest(…): the planner guesses 100 rows for
    -- unnest and, on a young table, scanned the whole outbox for every batch.
    UPDATE outbox o SET sent_at = now(),
           sequence = ($2::bigint[])[array_position($1::bigint[], o.seq)]
    WHERE o.seq = ANY($1::bigint[])
)
INSERT INTO outbox_sequence (aggregatetype, aggregateid, last)
SELECT * FROM unnest($3::text[], $4::text[], $5::bigint[])
ON CONFLICT (aggregatetype, aggregateid) DO UPDATE SET last = excluded.last
"""


def number_events(rows) -> tuple[list[int], dict[tuple[str, str], int]]:
    """ce_aggseq for outbox rows in outbox order, each aggregate continuing
    from its counter (the rows' "last", None for a new aggregate): the numbers,
    and each aggregate's new counter."""
    last: dict[tuple[str, str], int] = {}
    numbers = []
    for row in rows:
        aggregate = (row["aggregatetype"], row["aggregateid"])
        last[aggregate] = last.get(aggregate, row["last"] or 0) + 1
        numbers.append(last[aggregate])
    return numbers, last


async def mark_sent(conn: asyncpg.Connection, rows, numbers: list[int],
                    counters: dict[tuple[str, str], int]) -> None:
    await conn.execute(_MARK_SENT, [r["seq"] for r in rows], numbers,
                       [a for a, _ in counters], [i for _, i in counters],
                       list(counters.values()))


async def add_event(
    conn: asyncpg.Connection,
    event: StrictModel,
    *,
    topic: str,
    source: str,
    aggregatetype: str,
    key: str | None = None,
    subject: str | None = None,
) -> str:
    """Store `event` for publishing; returns its ce_id. Caller owns the transaction.

    `topic` is the registered name (e.g. "lab.events.v1"); the relay adds the
    deployment's topic prefix when it publishes."""
    (ce_id,) = await add_events(conn, [(event, key)], topic=topic, source=source,
                                aggregatetype=aggregatetype, subject=subject)
    return ce_id


def _rows(events: list[tuple[StrictModel, str | None]], *, topic: str, source: str,
          aggregatetype: str, subject: str | None) -> list[tuple]:
    traceparent, tracestate = current_trace_headers()
    rows = []
    for event, key in events:
        key = key if key is not None else event.kafka_key()
        rows.append((
            uuid.uuid4(), aggregatetype, key, event.CE_TYPE, event.model_dump_json(), topic,
            source, subject if subject is not None else key, traceparent, tracestate,
        ))
    return rows


async def add_events(
    conn: asyncpg.Connection,
    events: list[tuple[StrictModel, str | None]],
    *,
    topic: str,
    source: str,
    aggregatetype: str,
    subject: str | None = None,
) -> list[str]:
    """Store several (event, key) pairs in one round trip, in order; their ce_ids.
    A key of None is the event's own Kafka key."""
    rows = _rows(events, topic=topic, source=source, aggregatetype=aggregatetype,
                 subject=subject)
    if len(rows) == 1:
        await conn.execute(_INSERT, *rows[0])
    elif rows:
        await conn.executemany(_INSERT, rows)
    return [str(r[0]) for r in rows]


_ARRAY_TYPES = ("uuid", "text", "text", "text", "text", "text", "text", "text", "text", "text")


def outbox_cte(first: int) -> str:
    """`add_events` as a CTE named `outbox_rows`, to ride in a statement the
    caller sends anyway (a round trip fewer on a hot path). It takes the ten
    arrays of `outbox_arguments` as parameters $first … $first+9; rows keep
    their order (unnest's)."""
    arrays = ", ".join(f"${first + i}::{t}[]" for i, t in enumerate(_ARRAY_TYPES))
    return ("outbox_rows AS (INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, "
            "topic, source, subject, traceparent, tracestate) SELECT id, aggregatetype, "
            "aggregateid, type, payload::jsonb, topic, source, subject, traceparent, tracestate "
            f"FROM unnest({arrays}) AS r(id, aggregatetype, aggregateid, type, payload, topic, "
            "source, subject, traceparent, tracestate))")


def outbox_arguments(events: list[tuple[StrictModel, str | None]], *, topic: str, source: str,
                     aggregatetype: str, subject: str | None = None) -> list[list]:
    """The ten arrays `outbox_cte` inserts (as `add_events` would)."""
    rows = _rows(events, topic=topic, source=source, aggregatetype=aggregatetype,
                 subject=subject)
    return [[r[i] for r in rows] for i in range(10)]


async def prune(conn: asyncpg.Connection, *, outbox_retention: timedelta,
                inbox_retention: timedelta) -> tuple[int, int]:
    """Delete published outbox rows, old inbox rows and intake nonces past their
    retention. A nonce older than the inbox retention can no longer pass the
    intake time check, so it need not be kept longer."""
    sent = await conn.execute(
        "DELETE FROM outbox WHERE sent_at < db_now() - $1::interval", outbox_retention
    )
    seen = await conn.execute(
        "DELETE FROM processed_events WHERE processed_at < db_now() - $1::interval",
        inbox_retention,
    )
    for table, column in (("intake_nonces", "signed_at"), ("unverified_intake", "seen_at")):
        await conn.execute(
            f"DELETE FROM {table} WHERE {column} < db_now() - $1::interval", inbox_retention)
    return int(sent.split()[-1]), int(seen.split()[-1])


# The relay's pause after a round that published something (it polls again
# soon), doubled after each empty round up to its poll_interval.
POLL_MIN_S = 0.002
LOCK_RETRY_S = 0.5  # a standby relay asks for the lead this often
RELAY_BACKOFF_MIN_S = 0.2  # after a fault; doubled per fault up to the maximum
RELAY_BACKOFF_MAX_S = 5.0
DEAD_LETTERS_EVERY_S = 0.05  # stored dead-letter copies are looked for this often


class Relay:
    """Publishes the outbox of one schema. A session advisory lock makes it the
    only active relay; others wait idle and take over when it dies. It polls:
    an event waits at most `poll_interval` when the relay was idle."""

    def __init__(
        self,
        *,
        database_url: str,
        schema: str,
        producer_factory: Callable[[], AIOKafkaProducer],
        topic_prefix: str = "",
        batch_size: int = 500,
        poll_interval: float = 0.05,
        min_wait: float | None = None,
        prune_every: float = 600.0,
        outbox_retention: timedelta = timedelta(days=7),
        inbox_retention: timedelta = timedelta(days=7),
        on_ready=None,
    ) -> None:
        self.database_url = database_url
        self.schema = schema
        self.producer_factory = producer_factory
        self.topic_prefix = topic_prefix
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        # The pause after a round that published: short, the next events go at
        # once; longer, they leave in batches (fewer queries and produce
        # requests per event) for services whose events no one waits on.
        self.min_wait = POLL_MIN_S if min_wait is None else min_wait
        self.prune_every = prune_every
        self.outbox_retention = outbox_retention
        self.inbox_retention = inbox_retention
        # Readiness callback (component, ready, reason): not ready while the
        # relay retries an infrastructure fault, as the consumer does.
        self.on_ready = on_ready or (lambda *_: None)
        self._is_leader = False
        self.is_leader = False
        self.backoff = RELAY_BACKOFF_MIN_S  # the next retry's wait after a fault
        self.published = 0
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        return self._is_leader

    @is_leader.setter
    def is_leader(self, value: bool) -> None:
        # Shown as yigongti_relay_leading: an alert fires when no pod of a service leads.
        self._is_leader = value
        metrics().relay_leading.set(1 if value else 0, {"schema": self.schema})

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        background_context()
        while not self._stopping.is_set():
            try:
                await self._lead()
                self.backoff = RELAY_BACKOFF_MIN_S
            except Exception as exc:  # noqa: BLE001 - the relay must outlive any fault
                self.is_leader = False
                self.last_error = type(exc).__name__
                if not (is_infra_error(exc) or isinstance(exc, KafkaError)):
                    log.exception("relay error")
                else:
                    log.warning("relay infrastructure fault: %s", type(exc).__name__)
                self.on_ready("relay", False, f"infrastructure: {type(exc).__name__}")
                await self._sleep(self.backoff)
                self.backoff = min(self.backoff * 2, RELAY_BACKOFF_MAX_S)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass
        self._wake.clear()

    async def _lead(self) -> None:
        conn = await connect(self.database_url, self.schema, custom_plans=True)
        self.on_ready("relay", True, "")  # the database answers; leading or standing by
        producer = None
        try:
            while not await conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtext('outbox-relay:' || current_schema()))"
            ):
                self.is_leader = False
                await self._sleep(LOCK_RETRY_S)
                if self._stopping.is_set():
                    return
            self.is_leader = True
            producer = self.producer_factory()
            await producer.start()
            self.on_ready("relay", True, "")
            loop = asyncio.get_running_loop()
            next_prune = next_dead_letters = loop.time()
            idle = self.min_wait
            while not self._stopping.is_set():
                sent = await self.publish_pending(conn, producer)
                # Published (or found nothing to publish): the fault is over, and
                # the next one starts again from the shortest wait.
                self.backoff = RELAY_BACKOFF_MIN_S
                if loop.time() >= next_dead_letters:
                    await dead_letters.publish(conn, producer, physical_topic=self.physical_topic,
                                               record_errors=_RECORD_ERRORS)
                    next_dead_letters = loop.time() + DEAD_LETTERS_EVERY_S
                if loop.time() >= next_prune:
                    await prune(conn, outbox_retention=self.outbox_retention,
                                inbox_retention=self.inbox_retention)
                    next_prune = loop.time() + self.prune_every
                if sent >= self.batch_size:
                    continue
                # Polled, not notified (migrations/0006): soon again while rows
                # come, then less often, at most every poll_interval when idle.
                idle = self.min_wait if sent else min(idle * 2, max(self.poll_interval,
                                                                     self.min_wait))
                await self._sleep(idle)
        finally:
            self.is_leader = False
            if producer is not None:
                await producer.stop()
            await conn.close()

    async def publish_pending(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
        rows = await conn.fetch(
            """SELECT o.seq, o.id, o.aggregatetype, o.aggregateid, o.type,
                      o.payload::text AS payload, o.topic, o.source, o.subject,
                      o.traceparent, o.tracestate, o.created_at, q.last
               FROM outbox o LEFT JOIN outbox_sequence q
                    ON q.aggregatetype = o.aggregatetype AND q.aggregateid = o.aggregateid
               WHERE o.sent_at IS NULL AND o.refused_at IS NULL ORDER BY o.seq LIMIT $1""",
            self.batch_size,
        )
        if not rows:
            return 0
        refused: dict[int, KafkaError] = {}
        numbers, counters = number_events(rows)
        futures: list = []
        for i, (row, sequence) in enumerate(zip(rows, numbers, strict=True)):
            try:
                futures.append(await self._send(producer, row, sequence))
            except _RECORD_ERRORS as exc:  # refused before sending (e.g. over max size)
                refused[i] = exc
                futures.append(None)
        # aiokafka keeps one batch in flight per partition, so per-key order holds
        # even when a batch is retried.
        half = len(futures) // 2
        for i, fut in enumerate(futures):
            if fut is not None:
                try:
                    await fut
                except _RECORD_ERRORS as exc:
                    refused[i] = exc
                # Anything else (broker away, not authorised) is raised: the
                # whole batch is offered again later, nothing is set aside.
            if i == half:
                fault_point("relay.mid_batch")
        if refused:
            await self._set_aside(conn, [rows[i] for i in refused], list(refused.values()))
            keep = [i for i in range(len(rows)) if i not in refused]
            rows, numbers = [rows[i] for i in keep], [numbers[i] for i in keep]
        # The refused rows' numbers stay taken: their aggregates show the gap.
        await mark_sent(conn, rows, numbers, counters)
        self.published += len(rows)
        metrics().outbox_published.add(len(rows), {"schema": self.schema})
        return len(rows) + len(refused)

    async def _set_aside(self, conn: asyncpg.Connection, rows, errors) -> None:
        await conn.execute(
            """UPDATE outbox SET refused_at = now(),
                      refused_error = ($2::text[])[array_position($1::bigint[], seq)]
               WHERE seq = ANY($1::bigint[])""",
            [r["seq"] for r in rows], [type(e).__name__ for e in errors])
        for row, error in zip(rows, errors, strict=True):
            log.error("outbox row %s (%s) refused by the broker: %s; set aside",
                      row["id"], row["type"], type(error).__name__)
        metrics().outbox_refused.add(len(rows), {"schema": self.schema})

    def physical_topic(self, topic: str) -> str:
        # Rows written with the physical name already are published as they are.
        if self.topic_prefix and topic.startswith(self.topic_prefix):
            return topic
        return topic_name(topic, self.topic_prefix)

    async def _send(self, producer: AIOKafkaProducer, row: asyncpg.Record, sequence: int):
        topic = self.physical_topic(row["topic"])
        if spans_exported():
            parent = propagate.extract(
                {k: row[k] for k in ("traceparent", "tracestate") if row[k]})
            with tracer.start_as_current_span(
                f"{topic} publish", context=parent, kind=SpanKind.PRODUCER,
                attributes={"messaging.system": "kafka", "messaging.destination.name": topic,
                            "cloudevents.event_id": str(row["id"]),
                            "cloudevents.event_type": row["type"]},
            ):
                traceparent, tracestate = current_trace_headers()
        else:
            # No span to show: the record carries the change's own trace context.
            traceparent, tracestate = row["traceparent"], row["tracestate"]
        envelope = Envelope(
            id=str(row["id"]),
            source=row["source"],
            type=row["type"],
            time=row["created_at"],
            subject=row["subject"],
            aggseq=sequence,
            traceparent=traceparent,
            tracestate=tracestate,
        )
        # jsonb's own text: valid JSON, not decoded and encoded again here.
        return await producer.send(
            topic, value=row["payload"].encode(), key=row["aggregateid"].encode(),
            headers=to_headers(envelope),
        )

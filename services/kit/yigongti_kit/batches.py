"""What the kit does with each batch a FastStream subscriber polls: the part
of a consumer that keeps the guarantees (DESIGN §6). Intake (`consumer.py`)
and subscriptions to other services' events (`subscriptions.py`) share it and
differ only in how one record is processed.

A batch is handled partition by partition side by side, each partition's
records in transactions of up to MAX_TX_RECORDS, each record under a
savepoint (the subclass's `process`). After a partition's database commit its
offset is committed, for that partition alone. Then:

- a deadlock or serialization failure (SQLSTATE 40) between two partitions'
  transactions: the partition is rewound and read again at once;
- an infrastructure fault (database or broker away): the partition is
  rewound, every assigned partition paused, and polling resumes after a
  backoff (0.1 s doubling to 5 s) for as long as the fault lasts. FastStream's
  loop keeps polling meanwhile (paused partitions give nothing), so the
  consumer stays in its group; readiness shows the fault;
- any other exception outside a record (a fault of the kit itself, or one
  between the database commit and the offset commit) is handled like an
  infrastructure fault: rewound and retried with backoff, never skipped.

Nothing escapes to FastStream: under MANUAL acks it would swallow the
exception and move on, and the next commit would skip the batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from pydantic import BaseModel
from yigongti_contracts.base import StrictModel
from yigongti_contracts.envelope import Envelope

from .db import fault_kind, is_transient_error
from .faults import fault_point
from .outbox import add_event
from .telemetry import metrics, spans_exported, untraced_sql

log = logging.getLogger(__name__)
tracer = trace.get_tracer("yigongti.consumer")

APP_RETRIES = 3  # a handler bug is tried this often before the record is answered
# Records per transaction. Each record opens a savepoint (a subtransaction) and
# a handler may open one more; past 64 subtransactions a transaction overflows
# PostgreSQL's per-backend cache and every other backend's snapshots get slower.
MAX_TX_RECORDS = 25
TIMEOUT_ROUNDS = 3  # statement timeouts waited out per record before it is its own fault
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0

# Readiness callback: (component, ready, reason)
ReadySink = Callable[[str, bool, str], None]


def retry_batch(exc: BaseException) -> bool:
    """Faults after which a partition's transaction is rolled back and read again
    (db.fault_kind: the database away or refusing writes or logins, a lost
    serialization race, a statement timeout; the broker away)."""
    return fault_kind(exc) is not None or isinstance(exc, KafkaError)


async def undo(conn: asyncpg.Connection, savepoint: str) -> None:
    """Roll back to `savepoint` after a fault inside it; a connection that is
    gone has nothing to roll back (its transaction is lost with it)."""
    try:
        await conn.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
    except Exception as exc:  # noqa: BLE001 - only a dead connection is expected here
        if fault_kind(exc) != "infrastructure":
            raise


@dataclass
class Delivery:
    """What a handler gets: the decoded record and a way to emit events in the
    record's transaction (the outbox)."""

    conn: asyncpg.Connection
    envelope: Envelope
    event: BaseModel
    record: ConsumerRecord
    consumer: BatchHandler
    emitted: list[str] = field(default_factory=list, kw_only=True)

    async def emit(self, event: StrictModel, *, key: str | None = None,
                   aggregatetype: str | None = None) -> str:
        ce_id = await add_event(
            self.conn, event, topic=self.consumer.events_topic, source=self.consumer.source,
            aggregatetype=aggregatetype or self.consumer.aggregatetype, key=key,
        )
        self.emitted.append(ce_id)
        return ce_id


class BatchHandler:
    """The handler of one FastStream batch subscriber. Subclasses give
    `process` (one record, in the caller's transaction) and `give_up` (a record
    whose processing failed APP_RETRIES times)."""

    def __init__(self, *, pool: asyncpg.Pool, service: str, component: str, source: str,
                 events_topic: str, aggregatetype: str,
                 on_ready: ReadySink | None = None) -> None:
        self.pool = pool
        self.service = service
        self.component = component  # its name in readiness and logs
        # Where what the handlers emit goes (Delivery.emit): the service's own
        # events topic (its registered name), its source and aggregate type.
        self.source = source
        self.events_topic = events_topic
        self.aggregatetype = aggregatetype
        self.on_ready = on_ready or (lambda *_: None)
        self.subscriber = None  # the FastStream subscriber, set when registered
        self.assigned = asyncio.Event()
        self.processed = 0
        self._stopping = False
        self._paused = False
        self._backoff = BACKOFF_MIN_S
        self._resume_at: asyncio.TimerHandle | None = None
        # When the current fault began, and (how long, when it ended) for the
        # last one: intake's freshness allows for it (consumer.py).
        self._fault_since: float | None = None
        self._last_fault: tuple[float, float] = (0.0, 0.0)
        self._fetched_end: dict[TopicPartition, int] = {}  # offset after the last record seen
        self._timeouts: dict[tuple[str, int, int], int] = {}  # statement timeouts per record

    def stop(self) -> None:
        """Finish the transaction in hand, commit it, and take no more."""
        self._stopping = True
        if self._resume_at is not None:
            self._resume_at.cancel()

    def listener(self) -> ConsumerRebalanceListener:
        return _AssignmentListener(self)

    # -- the FastStream handler ----------------------------------------------

    async def __call__(self, records: tuple[ConsumerRecord, ...]) -> None:
        if not records:
            return
        consumer = self.subscriber.consumer
        by_tp: dict[TopicPartition, list[ConsumerRecord]] = {}
        for record in records:
            by_tp.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        for tp, tp_records in by_tp.items():
            self._fetched_end[tp] = max(self._fetched_end.get(tp, 0), tp_records[-1].offset + 1)
        try:
            with untraced_sql():  # the batch's own SQL; each record's span traces its own
                await self._handle(consumer, by_tp)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - nothing may escape (module doc)
            log.exception("%s: batch failed outside its records", self.component)
            for tp, tp_records in by_tp.items():
                self._rewind(consumer, tp, tp_records[0].offset)
            self._pause(consumer, exc)

    async def _handle(self, consumer, by_tp: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        outcomes = await asyncio.gather(*(self._handle_partition(rs) for rs in by_tp.values()))
        fault: BaseException | None = None
        for (tp, records), (done, failed) in zip(by_tp.items(), outcomes, strict=True):
            if done is not None:
                fault_point("consumer.before_offset_commit")
                await self._commit(consumer, tp, done + 1)
            if done is None or done < records[-1].offset:
                # What was not committed is read again (a fault, or a stop).
                self._rewind(consumer, tp, records[0].offset if done is None else done + 1)
            fault = fault or failed
        if fault is None:
            self._recovered(consumer)
        elif is_transient_error(fault):
            # A deadlock or serialization failure between two transactions: the
            # loser is read again at once; the service is healthy.
            log.info("%s: transaction conflict, read again: %s", self.component,
                     type(fault).__name__)
        else:
            self._pause(consumer, fault)

    async def _handle_partition(
        self, records: list[ConsumerRecord]
    ) -> tuple[int | None, BaseException | None]:
        """One partition's records: the offset of the last one committed (None
        if none) and the fault that stopped the rest."""
        done: int | None = None
        for start in range(0, len(records), MAX_TX_RECORDS):
            if self._stopping:
                break
            try:
                last = await self._handle_chunk(records[start:start + MAX_TX_RECORDS])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported to _handle, which rewinds
                return done, exc
            if last is None:
                break
            done = last
        return done, None

    async def _handle_chunk(self, records: list[ConsumerRecord]) -> int | None:
        """Records in one transaction; the offset of the last one handled."""
        done: int | None = None
        outcomes: list[tuple[str, float]] = []
        async with self.pool.acquire() as conn, conn.transaction():
            for record in records:
                outcomes.append(await self._handle_record(conn, record))
                done = record.offset
        fault_point("consumer.after_db_commit")
        await self.after_commit()
        # Counted after the commit: only what really took effect.
        for outcome, seconds in outcomes:
            self.count(outcome, seconds)
        self.processed += len(outcomes)
        return done

    async def _handle_record(self, conn: asyncpg.Connection,
                             record: ConsumerRecord) -> tuple[str, float]:
        """One record inside the transaction: its outcome (a handler bug is tried
        APP_RETRIES times, then given up on by the subclass)."""
        started = time.perf_counter()
        coordinates = (record.topic, record.partition, record.offset)
        for attempt in range(1, APP_RETRIES + 1):
            try:
                outcome = await self.process(conn, record)
                self._timeouts.pop(coordinates, None)
                return outcome, time.perf_counter() - started
            except Exception as exc:
                if fault_kind(exc) == "timeout":
                    # statement_timeout: the database may be slow for a while, or
                    # this record may always time out; after a few rounds it is
                    # the record's own fault, so its partition moves on.
                    self._timeouts[coordinates] = self._timeouts.get(coordinates, 0) + 1
                    if self._timeouts[coordinates] <= TIMEOUT_ROUNDS:
                        raise
                elif retry_batch(exc):
                    raise
                log.exception("%s: handler failed (%d/%d) at %s-%d@%d", self.component,
                              attempt, APP_RETRIES, record.topic, record.partition,
                              record.offset)
                if attempt < APP_RETRIES:
                    await asyncio.sleep(0.05 * attempt)
        self._timeouts.pop(coordinates, None)
        return await self.give_up(conn, record), time.perf_counter() - started

    # -- what subclasses give ---------------------------------------------------

    async def process(self, conn: asyncpg.Connection, record: ConsumerRecord) -> str:
        raise NotImplementedError

    async def give_up(self, conn: asyncpg.Connection, record: ConsumerRecord) -> str:
        raise NotImplementedError

    async def after_commit(self) -> None:
        """Work that must follow the database commit (before the offset commit)."""

    def count(self, outcome: str, seconds: float) -> None:
        m = metrics()
        attrs = {"service": self.service, "consumer": self.component, "outcome": outcome}
        m.records_consumed.add(1, attrs)
        m.handler_duration.record(seconds, attrs)

    # -- offsets, pause and resume -----------------------------------------------

    async def _commit(self, consumer, tp: TopicPartition, offset: int) -> None:
        try:
            await consumer.commit({tp: offset})
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # After a rebalance the new owner redelivers; the inbox makes that harmless.
            log.warning("%s: offset commit failed on %s-%d: %s", self.component, tp.topic,
                        tp.partition, type(exc).__name__)

    def _rewind(self, consumer, tp: TopicPartition, offset: int) -> None:
        try:
            consumer.seek(tp, offset)
        except (IllegalStateError, AssertionError, KafkaError):
            # Revoked during the batch: its new owner reads from the committed offset.
            log.info("%s: %s-%d no longer assigned; not rewound", self.component, tp.topic,
                     tp.partition)

    def fetched_end(self, tp: TopicPartition) -> int:
        """The offset after the last record of `tp` this consumer was handed."""
        return self._fetched_end.get(tp, 0)

    def held_up_s(self) -> float:
        """How long this consumer was held up by the current fault, or by the
        last one while its backlog may still be being read (seconds)."""
        now = time.monotonic()
        if self._fault_since is not None:
            return now - self._fault_since
        lasted, ended = self._last_fault
        return lasted if now - ended < max(lasted, 60.0) else 0.0

    def _pause(self, consumer, fault: BaseException) -> None:
        reason = type(fault).__name__
        if self._fault_since is None:
            self._fault_since = time.monotonic()
        if not self._paused:
            log.warning("%s: pausing after %s", self.component, reason)
            self._paused = True
            metrics().consumer_paused.add(1, {"service": self.service,
                                              "consumer": self.component})
        self.on_ready(self.component, False, f"retrying: {reason}")
        assigned = consumer.assignment()
        if assigned:
            consumer.pause(*assigned)
        if self._resume_at is not None:
            self._resume_at.cancel()
        self._resume_at = asyncio.get_running_loop().call_later(
            self._backoff, self._resume, consumer)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)

    def _resume(self, consumer) -> None:
        self._resume_at = None
        if self._stopping:
            return
        try:
            consumer.resume(*consumer.assignment())
        except (IllegalStateError, KafkaError, AssertionError):
            pass  # stopped or rebalancing: the next assignment starts unpaused

    def _recovered(self, consumer) -> None:
        self._backoff = BACKOFF_MIN_S
        if self._fault_since is not None:
            now = time.monotonic()
            self._last_fault = (now - self._fault_since, now)
            self._fault_since = None
        if self._paused:
            self._paused = False
            metrics().consumer_paused.add(-1, {"service": self.service,
                                               "consumer": self.component})
            log.info("%s: resumed", self.component)
        self.on_ready(self.component, True, "")


async def traced(record: ConsumerRecord, work: Callable[[Any], Awaitable[str]]) -> str:
    """Run `work(span)` for one record in the trace the record carries: its
    own span when spans are exported (a child of the publisher's), else the
    carried context attached as it is, so what the record causes (events,
    timers) continues the sender's trace at no cost. Returns its outcome."""
    parent = propagate.extract(
        {k: v.decode("latin-1") for k, v in (record.headers or []) if v is not None
         and k in ("traceparent", "tracestate")}, context=otel_context.Context())
    # Attached, not only given as the span's parent: the record's context replaces
    # the batch's, whose SQL is untraced (untraced_sql), so the record's SQL is traced.
    token = otel_context.attach(parent)
    try:
        if not spans_exported():
            return await work(None)
        with tracer.start_as_current_span(
            f"{record.topic} process", kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "kafka", "messaging.destination.name": record.topic,
                        "messaging.kafka.partition": record.partition,
                        "messaging.kafka.offset": record.offset},
        ) as span:
            outcome = await work(span)
            span.set_attribute("yigongti.outcome", outcome)
        return outcome
    finally:
        otel_context.detach(token)


class _AssignmentListener(ConsumerRebalanceListener):
    def __init__(self, handler: BatchHandler) -> None:
        self.handler = handler

    async def on_partitions_revoked(self, revoked) -> None:
        pass

    async def on_partitions_assigned(self, assigned) -> None:
        if assigned:
            self.handler.assigned.set()

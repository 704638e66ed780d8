"""The intake consumer: decode → verify → handle in one transaction → commit offset.

It is the handler of the intake topic's FastStream batch subscriber; the batch
machinery (partitions side by side, transactions, offsets, pause and backoff)
is `batches.py`. Here: one record.

- a record that can never succeed is answered with `IntakeRejected` (reason
  names fields and codes, never values); when it could not even be decoded, a
  copy also goes to the service's dead-letter topic with the error and its
  origin in the headers;
- a handler bug is retried a few times, then treated like an undecodable record.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import asyncpg
from aiokafka import AIOKafkaProducer, ConsumerRecord
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from pydantic import ValidationError
from yigongti_contracts.base import StrictModel
from yigongti_contracts.common import (
    ID_PATTERN,
    SOURCE_PATTERN,
    TYPE_PATTERN,
    FieldError,
    IntakeRejected,
    field_errors,
)
from yigongti_contracts.envelope import Envelope, EnvelopeError, from_headers
from yigongti_contracts.registry import model_for

from . import inbox
from .batches import BatchHandler, ReadySink, retry_batch
from .outbox import add_event
from .telemetry import metrics, spans_exported

log = logging.getLogger(__name__)
tracer = trace.get_tracer("yigongti.consumer")


class Rejection(Exception):
    """Raised by a handler or verifier: the record is refused for good.

    `code` is a reason code; `fields` are (field path, error code) pairs.
    Neither may carry a value from the record.
    """

    def __init__(self, code: str, fields: list[tuple[str, str]] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.fields = fields or []


class Undecodable(Exception):
    def __init__(self, code: str, fields: list[tuple[str, str]] | None = None,
                 envelope: Envelope | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.fields = fields or []
        self.envelope = envelope


@dataclass
class Intake:
    """What a handler gets: the decoded record and a way to emit events."""

    conn: asyncpg.Connection
    envelope: Envelope
    event: StrictModel
    record: ConsumerRecord
    consumer: IntakeConsumer
    sender: Sender | None = None
    emitted: list[str] = field(default_factory=list)

    async def emit(self, event: StrictModel, *, key: str | None = None,
                   aggregatetype: str | None = None) -> str:
        ce_id = await add_event(
            self.conn, event, topic=self.consumer.events_topic, source=self.consumer.source,
            aggregatetype=aggregatetype or self.consumer.aggregatetype, key=key,
        )
        self.emitted.append(ce_id)
        return ce_id


Handler = Callable[[Intake], Awaitable[None]]


class Guard(Protocol):
    """Checks what an intake record claims about its sender (DESIGN §6 security)."""

    async def check(self, conn: asyncpg.Connection, envelope: Envelope,
                    record: ConsumerRecord) -> Sender:
        """Signature, known terminal, fresh time; raises Rejection. Before the inbox."""

    async def remember(self, conn: asyncpg.Connection, envelope: Envelope,
                       record: ConsumerRecord) -> None:
        """Nonce bookkeeping for a record seen for the first time; raises Rejection."""


@dataclass(frozen=True)
class Sender:
    """Who sent an intake record, as its signature proves."""

    terminal_id: str
    institution_id: str


class _Conflict(Exception):
    pass



def _record_key(record: ConsumerRecord) -> str | None:
    if record.key is None:
        return None
    try:
        return record.key.decode()
    except UnicodeDecodeError:
        return None


def _safe(value: str | None, pattern: str) -> str | None:
    return value if value and re.fullmatch(pattern, value) else None


def _answer_key(record: ConsumerRecord, envelope: Envelope | None) -> str:
    """Where the sender looks for the answer: the record's key, else its ce_id,
    else its coordinates (when neither is a usable identifier)."""
    for candidate in (_record_key(record), envelope.id if envelope else None):
        if candidate and re.fullmatch(ID_PATTERN, candidate):
            return candidate
    return f"{record.topic}:{record.partition}:{record.offset}"[-64:].lstrip(".:-_")


class IntakeConsumer(BatchHandler):
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        producer: Callable[[], AIOKafkaProducer],
        topic: str,
        events_topic: str,
        dlq_topic: str,
        source: str,
        service: str,
        aggregatetype: str,
        handlers: dict[str, Handler],
        guard: Guard | None = None,
        max_record_bytes: int = 256 * 1024,
        on_ready: ReadySink | None = None,
    ) -> None:
        super().__init__(pool=pool, service=service, component="consumer", on_ready=on_ready)
        # The dead-letter copies' producer (raw headers and bytes), looked up when
        # used: the broker's, connected before its subscribers start.
        self.producer = producer
        self.topic = topic
        self.events_topic = events_topic
        self.dlq_topic = dlq_topic
        self.source = source
        self.aggregatetype = aggregatetype
        self.handlers = handlers
        self.guard = guard
        self.max_record_bytes = max_record_bytes

    async def give_up(self, conn: asyncpg.Connection, record: ConsumerRecord) -> str:
        err = Undecodable("processing_error", [("value", "exception")])
        await self._answer_undecodable(conn, record, err)
        return err.code

    # -- one record -----------------------------------------------------------

    def decode(self, record: ConsumerRecord) -> tuple[Envelope, StrictModel]:
        """Envelope and model, or Undecodable / Rejection (schema violation)."""
        value = record.value or b""
        if len(value) > self.max_record_bytes:
            raise Undecodable("oversized", [("value", "max_bytes")])
        try:
            envelope = from_headers(record.headers or [])
        except EnvelopeError as exc:
            raise Undecodable(exc.code, [(name, exc.code) for name in exc.fields]) from None
        model = model_for(envelope.type)
        if model is None or envelope.type not in self.handlers:
            raise Undecodable("unknown_type", [("ce_type", "unknown")], envelope)
        try:
            data = json.loads(value)
        except (ValueError, UnicodeDecodeError, RecursionError):
            # RecursionError: JSON nested too deep for the parser ("[[[[…"), still
            # within the size limit; undecodable, not a handler bug to retry.
            raise Undecodable("malformed_json", [("value", "json")], envelope) from None
        try:
            event = model.model_validate(data)
        except ValidationError as exc:
            raise Rejection("schema_violation",
                            [(f.field, f.code) for f in field_errors(exc)]) from None
        return envelope, event

    async def process(self, conn: asyncpg.Connection, record: ConsumerRecord) -> str:
        """Decode, check and apply one record in the caller's transaction; its outcome."""
        parent = propagate.extract(
            {k: v.decode("latin-1") for k, v in (record.headers or []) if v is not None
             and k in ("traceparent", "tracestate")}
        )
        if not spans_exported():
            # No span to show: what the record causes carries the sender's trace.
            token = otel_context.attach(parent)
            try:
                return await self._decode_and_apply(conn, record, None)
            finally:
                otel_context.detach(token)
        with tracer.start_as_current_span(
            f"{record.topic} process", context=parent, kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "kafka", "messaging.destination.name": record.topic,
                        "messaging.kafka.partition": record.partition,
                        "messaging.kafka.offset": record.offset},
        ) as span:
            outcome = await self._decode_and_apply(conn, record, span)
            span.set_attribute("yigongti.outcome", outcome)
        return outcome

    async def _decode_and_apply(self, conn: asyncpg.Connection, record: ConsumerRecord,
                                span) -> str:
        try:
            envelope, event = self.decode(record)
        except Undecodable as exc:
            await self._answer_undecodable(conn, record, exc)
            return exc.code
        except Rejection as exc:
            await self._write_rejection(conn, record, exc, _partial_envelope(record))
            return exc.code
        if span is not None:
            span.set_attribute("cloudevents.event_type", envelope.type)
        return await self._apply(conn, record, envelope, event)

    def count(self, outcome: str, seconds: float) -> None:
        super().count(outcome, seconds)
        if outcome not in ("applied", "duplicate"):
            metrics().records_rejected.add(1, {"service": self.service, "reason": outcome})

    async def _apply(self, conn: asyncpg.Connection, record: ConsumerRecord,
                     envelope: Envelope, event: StrictModel) -> str:
        digest = inbox.payload_hash(envelope.type, record.value or b"")
        # One savepoint: a refused record leaves no trace but its answer. Not
        # released: the transaction's commit releases it, a round trip saved.
        await conn.execute("SAVEPOINT intake_record")
        try:
            sender = await self.guard.check(conn, envelope, record) if self.guard else None
            claim = await inbox.claim(conn, envelope.source, envelope.id, digest)
            if claim == "duplicate":
                return "duplicate"
            if claim == "conflict":
                raise _Conflict()
            if self.guard:
                await self.guard.remember(conn, envelope, record)
            intake = Intake(conn=conn, envelope=envelope, event=event, record=record,
                            consumer=self, sender=sender)
            await self.handlers[envelope.type](intake)
        except Rejection as exc:
            await conn.execute("ROLLBACK TO SAVEPOINT intake_record")
            # A copy of an event already applied (same source, id and payload)
            # that fails the sender check now (re-sent after the time window,
            # its terminal withdrawn since) is a duplicate: a refusal would
            # contradict its acceptance, and a copy can have no effect.
            if await inbox.already_applied(conn, envelope.source, envelope.id, digest):
                return "duplicate"
            await self._write_rejection(conn, record, exc, envelope)
            return exc.code
        except _Conflict:
            await conn.execute("ROLLBACK TO SAVEPOINT intake_record")
            await inbox.record_conflict(
                conn, source=envelope.source, ce_id=envelope.id, ce_type=envelope.type,
                digest=digest, topic=record.topic, partition=record.partition,
                offset=record.offset,
            )
            await self._write_rejection(
                conn, record, Rejection("duplicate_id_conflict", [("ce_id", "reused")]),
                envelope,
            )
            return "conflict"
        except Exception as exc:
            if not retry_batch(exc):  # a handler bug: undone, tried again by the caller
                await conn.execute("ROLLBACK TO SAVEPOINT intake_record")
            raise
        return "applied"

    # -- answers --------------------------------------------------------------

    async def _write_rejection(self, conn: asyncpg.Connection, record: ConsumerRecord,
                               exc: Rejection | Undecodable, envelope: Envelope | None) -> None:
        # Refused records are deduplicated by their Kafka coordinates, not by the
        # ce_id they claim: a forged record must not take a genuine record's id.
        claim = await inbox.claim(conn, f"kafka:{record.topic}",
                                  f"{record.partition}:{record.offset}",
                                  inbox.payload_hash("", record.value or b""))
        if claim != "new":
            return
        key = _answer_key(record, envelope)
        rejected = IntakeRejected(
            key=key,
            service=self.service,
            # What the envelope claims is echoed only when well-formed.
            rejected_id=_safe(envelope and envelope.id, ID_PATTERN),
            rejected_type=_safe(envelope and envelope.type, TYPE_PATTERN),
            sender=_safe(envelope and envelope.source, SOURCE_PATTERN),
            reason=exc.code,
            fields=[FieldError(field=f, code=c) for f, c in exc.fields][:50],
            rejected_at=datetime.now(UTC),
        )
        await add_event(conn, rejected, topic=self.events_topic, source=self.source,
                        # The service's own aggregate type: a refusal keyed by an order id
                        # continues that order's ce_sequence instead of starting a second one.
                        aggregatetype=self.aggregatetype, key=key)
        log.info("intake rejected: %s at %s-%d@%d", exc.code, record.topic, record.partition,
                 record.offset)

    async def _answer_undecodable(self, conn: asyncpg.Connection, record: ConsumerRecord,
                                  exc: Undecodable) -> None:
        envelope = exc.envelope or _partial_envelope(record)
        await self.dead_letter(record, exc.code, exc.fields)
        await self._write_rejection(conn, record, Rejection(exc.code, exc.fields), envelope)

    async def dead_letter(self, record: ConsumerRecord, code: str,
                          fields: list[tuple[str, str]]) -> None:
        detail = ",".join(f"{f}:{c}" for f, c in fields)
        headers = [(k, v) for k, v in (record.headers or []) if not k.startswith("dlq-")]
        headers += [
            ("dlq-error", code.encode()),
            ("dlq-error-detail", detail.encode()),
            ("dlq-source-topic", record.topic.encode()),
            ("dlq-source-partition", str(record.partition).encode()),
            ("dlq-source-offset", str(record.offset).encode()),
            ("dlq-consumer", self.service.encode()),
            ("dlq-at", datetime.now(UTC).isoformat().encode()),
        ]
        # The original's timestamp travels with it, for a replay to be judged by.
        await self.producer().send_and_wait(self.dlq_topic, value=record.value, key=record.key,
                                          headers=headers, timestamp_ms=record.timestamp)
        metrics().dead_lettered.add(1, {"service": self.service, "error": code})


def _partial_envelope(record: ConsumerRecord) -> Envelope | None:
    """Whatever the headers say, for the sender's benefit, without validating."""
    try:
        return from_headers(record.headers or [])
    except EnvelopeError:
        return None

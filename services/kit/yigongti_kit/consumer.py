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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import asyncpg
from aiokafka import ConsumerRecord
from opentelemetry import trace
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

from . import dead_letters, inbox
from .batches import BatchHandler, Delivery, ReadySink, retry_batch, traced
from .outbox import add_event
from .telemetry import metrics

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
class Intake(Delivery):
    """What an intake handler gets: the decoded record, who sent it, a way to emit events."""

    sender: Sender | None = None


Handler = Callable[[Intake], Awaitable[None]]


class Guard(Protocol):
    """Checks what an intake record claims about its sender (DESIGN §6 security)."""

    async def check(self, conn: asyncpg.Connection, envelope: Envelope,
                    record: ConsumerRecord, received_at: datetime) -> Sender:
        """Signature, known terminal, time fresh at `received_at`; raises
        Rejection. Before the inbox."""

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
        super().__init__(pool=pool, service=service, component="consumer", source=source,
                         events_topic=events_topic, aggregatetype=aggregatetype,
                         on_ready=on_ready)
        self.topic = topic
        self.dlq_topic = dlq_topic
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

    async def process(self, conn: asyncpg.Connection, record: ConsumerRecord, *,
                      seen_at: datetime | None = None) -> str:
        """Decode, check and apply one record in the caller's transaction; its
        outcome. `seen_at`: when the service first saw it (a dead letter's
        replay), for the freshness check; default `received_at(record)`."""
        return await traced(record,
                            lambda span: self._decode_and_apply(conn, record, span, seen_at))

    def received_at(self, record: ConsumerRecord) -> datetime:
        """The time a record's signed ce_time is judged against."""
        return datetime.fromtimestamp(record.timestamp / 1000, UTC)

    async def _decode_and_apply(self, conn: asyncpg.Connection, record: ConsumerRecord,
                                span, seen_at: datetime | None) -> str:
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
        return await self._apply(conn, record, envelope, event, seen_at)

    def count(self, outcome: str, seconds: float) -> None:
        super().count(outcome, seconds)
        if outcome not in ("applied", "duplicate"):
            metrics().records_rejected.add(1, {"service": self.service, "reason": outcome})

    async def _apply(self, conn: asyncpg.Connection, record: ConsumerRecord,
                     envelope: Envelope, event: StrictModel, seen_at: datetime | None) -> str:
        digest = inbox.payload_hash(envelope.type, record.value or b"")
        # One savepoint: a refused record leaves no trace but its answer. Not
        # released: the transaction's commit releases it, a round trip saved.
        await conn.execute("SAVEPOINT intake_record")
        try:
            sender = await self.guard.check(
                conn, envelope, record, seen_at or self.received_at(record)) \
                if self.guard else None
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
        await dead_letters.store(conn, record, dlq_topic=self.dlq_topic, error=exc.code,
                                 fields=exc.fields, consumer=self.service)
        await self._write_rejection(conn, record, Rejection(exc.code, exc.fields), envelope)


def _partial_envelope(record: ConsumerRecord) -> Envelope | None:
    """Whatever the headers say, for the sender's benefit, without validating."""
    try:
        return from_headers(record.headers or [])
    except EnvelopeError:
        return None

"""The intake consumer: verify → decode → handle in one transaction → commit offset.

It is the handler of the intake topic's FastStream batch subscriber; the batch
machinery (partitions side by side, transactions, offsets, pause and backoff)
is `batches.py`. Here: one record, in this order.

1. Who sent it (the guard, on the raw headers and bytes, before anything is
   decoded): the signature of a registered, active terminal over ce_type,
   ce_id, ce_source, ce_time, nonce, terminal id and the value's hash, and a
   fresh ce_time. A record whose sender is not verified gets no answer and no
   dead letter (an answer would go to whoever the record claims to be, into
   that clinic's feed): it is kept for ops in `unverified_intake`
   (coordinates, the claimed terminal, the reason; never the payload) and
   counted. `yigongti-dlq unverified` lists them.
2. What it is, for a verified sender: size, envelope, a type this service
   takes, strict JSON (`contracts.strict`), the Kafka key equal to the
   model's key field. A refusal is answered with `IntakeRejected` (field
   paths and codes, never values); what could not even be decoded also gets
   a dead-letter copy.
3. Its effect, once (the inbox on ce_source and ce_id, then the nonce, then
   the service's handler), under a savepoint: a refusal leaves nothing but
   its answer. A handler bug is retried a few times, then answered as
   `processing_error` and dead-lettered.

Freshness. A signed ce_time must be within INTAKE_MAX_SKEW_S of the time the
record reached the broker, which the sender must not choose. On Apache Kafka
that is the record's LogAppendTime (the service refuses to start unless its
intake topics are stamped so; kafka.py). The embedded broker always keeps
the sender's time, so there it is the service's clock when it first sees
the record, allowing as much again as the consumer was held up by an
infrastructure fault just before (records sent during a database outage are
read after it). A terminal signs when it sends, never when it captures: an
event queued offline keeps its capture time in its own fields.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Protocol

import asyncpg
from aiokafka import ConsumerRecord
from opentelemetry import trace
from yigongti_contracts.base import StrictModel
from yigongti_contracts.common import (
    ID_PATTERN,
    SOURCE_PATTERN,
    TYPE_PATTERN,
    IntakeRejected,
    safe_fields,
)
from yigongti_contracts.envelope import Envelope, EnvelopeError, from_headers
from yigongti_contracts.registry import model_for
from yigongti_contracts.strict import PayloadError, parse_payload

from . import dead_letters, inbox
from .batches import BatchHandler, Delivery, ReadySink, traced, undo
from .intake_auth import single_headers
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

    async def verify(self, conn: asyncpg.Connection, record: ConsumerRecord,
                     received_at: datetime, allowance_s: float) -> Verdict:
        """Signature, registered terminal, ce_time fresh at `received_at`, on the
        raw headers and bytes. Before anything is decoded."""

    async def remember(self, conn: asyncpg.Connection, envelope: Envelope,
                       record: ConsumerRecord) -> None:
        """Nonce bookkeeping for a record seen for the first time; raises Rejection."""


@dataclass(frozen=True)
class Verdict:
    """The guard's word on a record: its sender, or why it is not verified."""

    sender: Sender | None
    reason: str | None = None  # a reject code when the sender is not verified
    claimed_terminal: str | None = None  # as the record claims it, when well-formed


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
        """Envelope and model, or Undecodable / Rejection."""
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
            event = parse_payload(model, value)
        except PayloadError as exc:
            if exc.code == "malformed_json":
                raise Undecodable(exc.code, exc.fields, envelope) from None
            raise Rejection(exc.code, exc.fields) from None
        if _record_key(record) != event.kafka_key():
            # One aggregate's records on one partition, in order: the key is the
            # field the topic registry names (kafka_key), nothing else.
            raise Rejection("key_mismatch", [(model.KEY_FIELD, "not_the_record_key")])
        return envelope, event

    async def process(self, conn: asyncpg.Connection, record: ConsumerRecord, *,
                      seen_at: datetime | None = None) -> str:
        """Verify, decode and apply one record in the caller's transaction; its
        outcome. `seen_at`: when the service first saw it (a dead letter's
        replay: its `dead_letters` row), for the freshness check."""
        return await traced(record, lambda span: self._process(conn, record, span, seen_at))

    def received_at(self, record: ConsumerRecord) -> datetime:
        """When the record reached the broker, by a clock its sender does not set
        (module doc): its LogAppendTime, else this service's clock now."""
        if record.timestamp_type == 1:  # LogAppendTime
            return datetime.fromtimestamp(record.timestamp / 1000, UTC)
        return datetime.now(UTC)

    async def _process(self, conn: asyncpg.Connection, record: ConsumerRecord, span,
                       seen_at: datetime | None) -> str:
        sender = None
        if self.guard is not None:
            verdict = await self.guard.verify(
                conn, record, seen_at or self.received_at(record),
                0.0 if seen_at else self.held_up_s())
            if verdict.reason is not None:
                return await self._unverified(conn, record, verdict)
            sender = verdict.sender
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
        return await self._apply(conn, record, envelope, event, sender)

    async def _unverified(self, conn: asyncpg.Connection, record: ConsumerRecord,
                          verdict: Verdict) -> str:
        """No answer to a sender who is not verified; kept for ops, counted. A
        copy of a record applied before (re-sent after its time window, say) is
        a duplicate: no effect either way."""
        envelope = _partial_envelope(record)
        if envelope is not None and await inbox.already_applied(
                conn, envelope.source, envelope.id,
                inbox.payload_hash(envelope.type, record.value or b"")):
            return "duplicate"
        await conn.execute(
            """INSERT INTO unverified_intake (topic, kafka_partition, kafka_offset,
                   claimed_terminal, reason)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (topic, kafka_partition, kafka_offset) DO NOTHING""",
            record.topic, record.partition, record.offset, verdict.claimed_terminal,
            verdict.reason)
        metrics().intake_unverified.add(1, {"service": self.service, "reason": verdict.reason})
        log.info("intake from an unverified sender (%s) at %s-%d@%d", verdict.reason,
                 record.topic, record.partition, record.offset)
        return verdict.reason

    def count(self, outcome: str, seconds: float) -> None:
        super().count(outcome, seconds)
        if outcome not in ("applied", "duplicate"):
            metrics().records_rejected.add(1, {"service": self.service, "reason": outcome})

    async def _apply(self, conn: asyncpg.Connection, record: ConsumerRecord,
                     envelope: Envelope, event: StrictModel, sender: Sender | None) -> str:
        digest = inbox.payload_hash(envelope.type, record.value or b"")
        # One savepoint: a refused record leaves no trace but its answer. Not
        # released: the transaction's commit releases it, a round trip saved.
        await conn.execute("SAVEPOINT intake_record")
        try:
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
        except Exception:
            # Undone whatever it was: the caller retries the record (a bug) or
            # the batch (a fault of the database or the broker).
            await undo(conn, "intake_record")
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
            fields=safe_fields(exc.fields),
            rejected_at=datetime.now(UTC),
        )
        await add_event(conn, rejected, topic=self.events_topic, source=self.source,
                        # The service's own aggregate type: a refusal keyed by an order id
                        # continues that order's ce_aggseq instead of starting a second one.
                        aggregatetype=self.aggregatetype, key=key)
        log.info("intake rejected: %s at %s-%d@%d", exc.code, record.topic, record.partition,
                 record.offset)

    async def _answer_undecodable(self, conn: asyncpg.Connection, record: ConsumerRecord,
                                  exc: Undecodable) -> None:
        envelope = exc.envelope or _partial_envelope(record)
        await dead_letters.store(conn, record, dlq_topic=self.dlq_topic, error=exc.code,
                                 fields=exc.fields, consumer=self.service)
        await self._write_rejection(conn, record, Rejection(exc.code, exc.fields), envelope)


def _partial_envelope(record: ConsumerRecord) -> Envelope | SimpleNamespace | None:
    """What the headers say of the record's id, type and source, for the
    sender's benefit, without validating: the envelope, or when that does not
    decode (a repeated or unreadable header elsewhere), the signed attributes
    alone (for a verified sender they are the ones its signature covers)."""
    try:
        return from_headers(record.headers or [])
    except EnvelopeError:
        pass
    found = single_headers(record.headers or [], ("ce_id", "ce_type", "ce_source")) or {}
    if not found:
        return None
    return SimpleNamespace(id=found.get("ce_id"), type=found.get("ce_type"),
                           source=found.get("ce_source"))

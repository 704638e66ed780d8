"""The clinic terminal's side of intake: build a signed CloudEvent record and
publish it. Used by terminal software, the demo, the benchmarks and the tests."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from yigongti_contracts.base import StrictModel
from yigongti_contracts.envelope import Envelope, to_headers

from .intake_auth import TerminalSigner

tracer = trace.get_tracer("yigongti.terminal")


@dataclass(frozen=True)
class IntakeRecord:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    ce_id: str


def build_record(
    signer: TerminalSigner,
    event: StrictModel,
    *,
    ce_id: str | None = None,
    time: datetime | None = None,
    nonce: str | None = None,
    key: str | None = None,
) -> IntakeRecord:
    """A signed record for `event`, carrying the current trace context."""
    ce_id = ce_id or str(uuid.uuid4())
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    key = key if key is not None else event.kafka_key()
    envelope = Envelope(
        id=ce_id,
        source=signer.source,
        type=event.CE_TYPE,
        time=time or datetime.now(UTC),
        subject=key,
        traceparent=carrier.get("traceparent"),
        tracestate=carrier.get("tracestate"),
    )
    value = json.dumps(event.model_dump(mode="json"), separators=(",", ":")).encode()
    headers = signer.sign(to_headers(envelope), value, nonce=nonce)
    return IntakeRecord(key.encode(), value, headers, ce_id)


class TerminalClient:
    def __init__(self, signer: TerminalSigner, producer: AIOKafkaProducer, topic: str) -> None:
        self.signer = signer
        self.producer = producer
        self.topic = topic

    async def publish(self, event: StrictModel, **kwargs) -> str:
        """Sign and publish `event` on the intake topic; returns its ce_id."""
        with tracer.start_as_current_span(
            f"{self.topic} publish", kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "kafka", "messaging.destination.name": self.topic,
                        "cloudevents.event_type": event.CE_TYPE},
        ):
            record = build_record(self.signer, event, **kwargs)
            await self.producer.send_and_wait(self.topic, value=record.value, key=record.key,
                                              headers=record.headers)
        return record.ce_id

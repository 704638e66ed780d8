"""Send queued events: sign each one when it is sent, never when captured.

The service takes a record whose ce_time lies within INTAKE_MAX_SKEW_S
(300 s) of when it reached the broker (kit/intake_auth.py), so an event
captured two hours before the link came back is signed now, with a fresh
ce_time and a new nonce, and keeps its ce_id and its value bytes. Its
capture time stays in its own payload fields (`ordered_at`...), which have
no freshness limit. A resend after an unclear answer (a timeout) is safe:
the service applies a (ce_source, ce_id) with the same value once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from yigongti_contracts.envelope import Envelope, to_headers
from yigongti_contracts.topics import topic_name
from yigongti_kit.intake_auth import TerminalSigner
from yigongti_kit.settings import KitSettings, kafka_client_kwargs
from yigongti_kit.telemetry import context_from_traceparent

from .queue import Queued

tracer = trace.get_tracer("yigongti.terminal")


class LinkDown(Exception):
    """The county cannot be reached now (the event stays in the queue)."""


def signed_headers(signer: TerminalSigner, item: Queued,
                   now: datetime | None = None) -> list[tuple[str, bytes]]:
    """The headers of `item` signed now: fresh ce_time and nonce, the ce_id of capture,
    and the current trace context (the send's span, a child of the capture's)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    envelope = Envelope(id=item.ce_id, source=signer.source, type=item.ce_type,
                        time=now or datetime.now(UTC), subject=item.key,
                        traceparent=carrier.get("traceparent"),
                        tracestate=carrier.get("tracestate"))
    return signer.sign(to_headers(envelope), item.value)


def producer_kwargs(bootstrap: str, broker_kind: str, timeout_s: float) -> dict:
    """The kit's producer tuning (acks=all, murmur2 partitioner), with short
    timeouts: a clinic should hear "queued" in seconds, not in minutes."""
    settings = KitSettings(service_name="terminal", kafka_bootstrap_servers=bootstrap,
                           kafka_broker_kind=broker_kind, enable_idempotence=None)
    kwargs = kafka_client_kwargs(settings, "producer")
    ms = int(timeout_s * 1000)
    kwargs.update(request_timeout_ms=ms, metadata_max_age_ms=60_000)
    return kwargs


def _route(producer: AIOKafkaProducer, route: dict[str, str]) -> None:
    """Reach brokers through other addresses than they advertise (a tunnel or
    relay at the clinic; the tests' cuttable proxy). aiokafka has no setting
    for it, so its metadata lookup is wrapped."""
    route_cluster(producer.client.cluster, route)


def route_cluster(cluster, route: dict[str, str]) -> None:
    """The same for any aiokafka client's cluster metadata (a consumer's too)."""
    if not route:
        return
    lookup = cluster.broker_metadata

    def routed(node_id):
        broker = lookup(node_id)
        if broker is None:
            return None
        target = route.get(f"{broker.host}:{broker.port}")
        if target is None:
            return broker
        host, _, port = target.rpartition(":")
        return broker._replace(host=host, port=int(port))

    cluster.broker_metadata = routed


class IntakeSender:
    """A Kafka producer for one flush: `async with IntakeSender(...) as s: await s.send(item)`."""

    def __init__(self, signer: TerminalSigner, bootstrap: str, *, broker_kind: str = "kafka",
                 topic_prefix: str = "", route: dict[str, str] | None = None,
                 timeout_s: float = 10.0) -> None:
        self.signer = signer
        self.topic_prefix = topic_prefix
        self.timeout_s = timeout_s
        self._kwargs = producer_kwargs(bootstrap, broker_kind, timeout_s)
        self._route = dict(route or {})
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> IntakeSender:
        producer = AIOKafkaProducer(**self._kwargs)
        _route(producer, self._route)
        try:
            await asyncio.wait_for(producer.start(), self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure to connect is "link down"
            await _quiet_stop(producer)
            raise LinkDown(type(exc).__name__) from exc
        self._producer = producer
        return self

    async def __aexit__(self, *exc) -> None:
        if self._producer is not None:
            await _quiet_stop(self._producer)
            self._producer = None

    def topic(self, service: str) -> str:
        return topic_name(f"{service}.intake.v1", self.topic_prefix)

    async def send(self, item: Queued, *, signer: TerminalSigner | None = None) -> None:
        """Sign `item` now and send it; LinkDown when the broker did not take it
        in time (it may have: the resend is then a duplicate, applied once).
        `signer`: another terminal's key on this producer (the load generator's
        clinics share one connection, each signing its own records)."""
        assert self._producer is not None, "use the sender as an async context manager"
        topic = self.topic(item.service)
        # The capture's trace goes on, even when the send is hours later in another
        # process: terminal -> intake -> service stays one trace.
        parent = context_from_traceparent(item.traceparent) if item.traceparent else None
        with tracer.start_as_current_span(
            f"{topic} publish", kind=SpanKind.PRODUCER, context=parent,
            attributes={"messaging.system": "kafka", "messaging.destination.name": topic,
                        "cloudevents.event_type": item.ce_type,
                        "cloudevents.event_id": item.ce_id},
        ):
            headers = signed_headers(signer or self.signer, item)
            try:
                await asyncio.wait_for(
                    self._producer.send_and_wait(topic, value=item.value,
                                                 key=item.key.encode(), headers=headers),
                    self.timeout_s)
            except Exception as exc:  # noqa: BLE001 - timeouts and broken connections alike
                raise LinkDown(type(exc).__name__) from exc


async def _quiet_stop(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 5)
    except Exception:  # noqa: BLE001,S110 - the link is down; nothing to flush
        pass

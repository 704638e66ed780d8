"""The service's Kafka runtime: one FastStream `KafkaBroker` whose batch
subscribers run the intake and the subscriptions to other services' events.

FastStream starts, polls, rebalances and stops the consumers; everything that
keeps a guarantee is the kit's own code inside the handler (`batches.py`).
Several FastStream defaults lose records, so this module sets, and the runtime
checks at startup (`unsafe_settings`), what FastStream would otherwise decide:

- ack policy MANUAL and no auto-commit: the kit commits each partition's
  offset after the database commit (ACK_FIRST, FastStream's default, commits
  before the handler runs: at-most-once);
- a raw parser and decoder: the default ones decode every header and JSON body
  of a batch before the handler is called, so one bad record costs the batch;
- topic auto-creation off (the stack creates topics with their partition
  counts; a missing topic fails the start, see `require_topics`);
- producer acks=all, and idempotence on Apache Kafka;
- no FastStream OpenTelemetry middleware (a batch would start a new root
  trace), no `publish_batch` (one partition for the whole batch), no typed
  bodies (pydantic errors log field values), no `KafkaRouter` (its
  `/asyncapi/try` route publishes unauthenticated). The last three are
  properties of code: tests/unit/kit/test_faststream_rules.py scans for them.

The kit's dead-letter copies and the relay use aiokafka producers of their
own: FastStream's `publish` re-encodes headers and adds `correlation_id`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import ConsumerRecord
from aiokafka.abc import ConsumerRebalanceListener
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaAckableMessage
from faststream.kafka.subscriber.usecase import BatchSubscriber
from faststream.middlewares import AckPolicy
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from .settings import KitSettings, kafka_client_kwargs

log = logging.getLogger(__name__)

# FastStream logs every batch it hands over ("Received", "Processed"): at DEBUG.
_FASTSTREAM_LOG = logging.getLogger("yigongti.faststream")

# FastStream's own poll loop: after an empty poll it sleeps batch_timeout_ms
# before polling again, which adds to an idle consumer's latency (DESIGN §8).
BATCH_TIMEOUT_MS = 10
MAX_BATCH = 200  # records per poll; bounds a batch's time under max_poll_interval


class _NoCommit:
    """The `consumer` of our messages: FastStream's `ack()` would commit every
    consumed position of every partition at once, before the database commit
    of the others. The kit commits per partition itself; an ack is a bug."""

    async def commit(self) -> None:
        raise RuntimeError("the kit commits offsets per partition; never ack() a batch")

    def seek(self, partition: Any, offset: int) -> None:
        raise RuntimeError("the kit seeks itself")


_NO_COMMIT = _NoCommit()


def raw_parser(records: tuple[ConsumerRecord, ...]) -> KafkaAckableMessage:
    """Hands the records over untouched: no header is decoded, no body parsed."""
    first = records[0] if records else None
    message_id = f"{first.topic}-{first.partition}@{first.offset}" if first else "empty"
    return KafkaAckableMessage(raw_message=records, body=records, consumer=_NO_COMMIT,
                               message_id=message_id, correlation_id=message_id)


def raw_decoder(message: KafkaAckableMessage) -> tuple[ConsumerRecord, ...]:
    return message.raw_message


def build_broker(settings: KitSettings) -> KafkaBroker:
    """The service's FastStream broker (not connected yet)."""
    kwargs = kafka_client_kwargs(settings, "producer")
    return KafkaBroker(
        kwargs["bootstrap_servers"],
        client_id=kwargs["client_id"],
        request_timeout_ms=kwargs["request_timeout_ms"],
        retry_backoff_ms=kwargs["retry_backoff_ms"],
        acks=kwargs["acks"],
        max_request_size=kwargs["max_request_size"],
        enable_idempotence=kwargs["enable_idempotence"],
        security=_security(kwargs),
        ack_policy=AckPolicy.MANUAL,
        allow_auto_create_topics=False,
        apply_types=False,  # handlers take the raw records; FastStream validates nothing
        logger=_FASTSTREAM_LOG,
        log_level=logging.DEBUG,
        graceful_timeout=settings.graceful_timeout_s,
    )


def _security(kwargs: dict[str, Any]) -> BaseSecurity | None:
    """FastStream's form of the TLS and SASL settings `kafka_client_kwargs` made."""
    protocol = kwargs["security_protocol"]
    ssl_context = kwargs.get("ssl_context")
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return BaseSecurity(ssl_context=ssl_context, use_ssl=True)
    sasl = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256,
            "SCRAM-SHA-512": SASLScram512}[kwargs["sasl_mechanism"]]
    return sasl(kwargs["sasl_plain_username"], kwargs["sasl_plain_password"],
                ssl_context=ssl_context, use_ssl=protocol == "SASL_SSL")


def consumer_tuning(settings: KitSettings, *, fetch_max_wait_ms: int | None = None
                    ) -> dict[str, Any]:
    """The consumer settings FastStream's subscriber passes to aiokafka.

    `fetch_max_wait_ms` lets a consumer no one waits on poll less: on the
    embedded broker an empty fetch is answered after this wait whatever
    arrives (so it is that consumer's latency), and every answer costs the
    service and the broker CPU; Apache Kafka answers as soon as data comes."""
    kwargs = kafka_client_kwargs(settings, "consumer")
    keep = ("session_timeout_ms", "heartbeat_interval_ms", "fetch_max_wait_ms",
            "isolation_level", "auto_offset_reset", "max_poll_interval_ms")
    tuning = {k: kwargs[k] for k in keep if k in kwargs}
    if fetch_max_wait_ms is not None:
        tuning["fetch_max_wait_ms"] = fetch_max_wait_ms
    return tuning


BatchCallback = Callable[[tuple[ConsumerRecord, ...]], Awaitable[None]]


def add_batch_subscriber(broker: KafkaBroker, settings: KitSettings, *, topic: str,
                         group_id: str, handler: BatchCallback,
                         listener: ConsumerRebalanceListener | None = None,
                         fetch_max_wait_ms: int | None = None):
    """A FastStream batch subscriber with MANUAL acks and the raw parser and
    decoder, calling `handler` with each polled batch."""
    subscriber = broker.subscriber(
        topic,
        group_id=group_id,
        batch=True,
        max_records=MAX_BATCH,
        batch_timeout_ms=BATCH_TIMEOUT_MS,
        listener=listener,
        parser=raw_parser,
        decoder=raw_decoder,
        ack_policy=AckPolicy.MANUAL,
        include_in_schema=False,  # our AsyncAPI is contracts/asyncapi/*.yaml
        **consumer_tuning(settings, fetch_max_wait_ms=fetch_max_wait_ms),
    )
    subscriber(handler)
    return subscriber


def unsafe_settings(broker: KafkaBroker, subscribers: Sequence[Any], *,
                    broker_kind: str) -> list[str]:
    """What, in the broker and subscribers as FastStream built them, would lose
    or weaken a guarantee; empty when all is well. Read after `broker.start()`
    (the consumers and the producer exist then)."""
    problems: list[str] = []
    if broker.config.allow_auto_create_topics:
        problems.append("broker: topic auto-creation is on")
    producer = broker.config.producer._producer
    aiokafka_producer = getattr(producer, "producer", None)
    if aiokafka_producer is None:
        problems.append("broker: no producer")
    else:
        if aiokafka_producer._sender._acks != -1:
            problems.append(f"broker: producer acks={aiokafka_producer._sender._acks}, not all")
        idempotent = aiokafka_producer._txn_manager is not None
        if broker_kind == "kafka" and not idempotent:
            problems.append("broker: producer not idempotent on Apache Kafka")
    for sub in subscribers:
        name = ",".join(sub.topic_names)
        if sub.ack_policy is not AckPolicy.MANUAL:
            problems.append(f"subscriber {name}: ack policy {sub.ack_policy.name}, not MANUAL")
        if not isinstance(sub, BatchSubscriber):
            problems.append(f"subscriber {name}: not a batch subscriber")
        consumer = sub.consumer
        if consumer is None or consumer._enable_auto_commit:
            problems.append(f"subscriber {name}: auto-commit is on")
        calls = list(sub.calls)
        parsers = {c.item_parser or sub._call_options.parser for c in calls}
        decoders = {c.item_decoder or sub._call_options.decoder for c in calls}
        if parsers != {raw_parser}:
            problems.append(f"subscriber {name}: not the kit's raw parser")
        if decoders != {raw_decoder}:
            problems.append(f"subscriber {name}: not the kit's raw decoder")
    return problems


class UnsafeKafkaSettings(RuntimeError):
    """The service refuses to run: a setting would lose or weaken a guarantee."""


async def require_topics(broker: KafkaBroker, topics: Sequence[str]) -> None:
    """Fail loudly when a topic the service reads does not exist: a consumer's
    metadata request would otherwise let the broker auto-create it, with its
    default partition count and none of the registry's settings."""
    admin = broker.config.admin.client
    existing = set(await admin.list_topics())
    missing = sorted(set(topics) - existing)
    if missing:
        raise MissingTopics(missing)


async def require_log_append_time(broker: KafkaBroker, topics: Sequence[str]) -> None:
    """Refuse to run on Apache Kafka unless the intake topics are stamped with
    the broker's clock (message.timestamp.type=LogAppendTime): the freshness of
    a signed record must not rest on a time its sender chooses (consumer.py)."""
    from aiokafka.admin import ConfigResource, ConfigResourceType

    admin = broker.config.admin.client
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
    problems = timestamp_type_problems(_topic_configs(responses))
    if problems:
        raise UnsafeKafkaSettings("; ".join(problems))


def _topic_configs(responses) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.resources:
            # (error_code, error_message, resource_type, resource_name, config_entries)
            name, entries = resource[3], resource[4]
            found[name] = {entry[0]: entry[1] for entry in entries}
    return found


def timestamp_type_problems(configs: dict[str, dict[str, str]]) -> list[str]:
    """What keeps these topics' records from carrying the broker's clock."""
    return [f"topic {name}: message.timestamp.type is {c.get('message.timestamp.type')}, "
            "not LogAppendTime" for name, c in sorted(configs.items())
            if c.get("message.timestamp.type") != "LogAppendTime"]


class MissingTopics(RuntimeError):
    def __init__(self, topics: list[str]) -> None:
        super().__init__("topics do not exist (create them first): " + ", ".join(topics))
        self.topics = topics

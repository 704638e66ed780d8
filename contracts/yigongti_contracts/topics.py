"""Topic registry: every service's intake, events and dead-letter topic (DESIGN §2).

Intake topics carry what comes from outside; only the owner writes its events
topic; each consuming service has its own dead-letter topic for records it
could not even decode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

TopicKind = Literal["intake", "events", "dlq"]

SERVICES = ("lab", "diagnosis", "referral", "settlement")

# The aggregate id that keys each service's records (DESIGN §4 catalogue).
# Lab intake that knows only a barcode (AnalyserResults) or a shipment
# (SpecimenDispatched) is keyed by that; the service resolves it to its order.
AGGREGATE_KEY = {
    "lab": "order_id",
    "diagnosis": "request_id",
    "referral": "referral_id",
    "settlement": "settlement_id",
}

# Events topics each service consumes besides its own intake (DESIGN §2 table).
SUBSCRIBES_TO = {
    "lab": (),
    "diagnosis": (),
    "referral": ("diagnosis", "lab"),
    "settlement": ("lab", "diagnosis"),
}

# Partition counts: assumed, not from a source. Six lets up to six consumers of a
# group share a topic on a small cluster; a dead-letter topic is read rarely and
# by hand, so one partition keeps it in arrival order.
PARTITIONS: dict[TopicKind, int] = {"intake": 6, "events": 6, "dlq": 1}

# A dead letter keeps the Kafka key of the record it copies.
DLQ_KEY = "original_key"

# Headers a dead letter carries besides the original record's (DESIGN §6); the
# kit's consumer writes them and its `yigongti-dlq` command reads them.
DLQ_ERROR_HEADER = "dlq-error"  # an error code, never a value
DLQ_ERROR_DETAIL_HEADER = "dlq-error-detail"
DLQ_SOURCE_TOPIC_HEADER = "dlq-source-topic"
DLQ_SOURCE_PARTITION_HEADER = "dlq-source-partition"
DLQ_SOURCE_OFFSET_HEADER = "dlq-source-offset"
DLQ_CONSUMER_HEADER = "dlq-consumer"
DLQ_AT_HEADER = "dlq-at"

_LEGAL = re.compile(r"^[A-Za-z0-9._-]{1,249}$")  # Kafka's topic name rule


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    key: str  # the field whose value is the record key
    owner: str  # the service that writes it (intake: the one that reads it)
    kind: TopicKind
    consumers: tuple[str, ...] = ()


def _service_topics(service: str) -> tuple[Topic, ...]:
    readers = tuple(s for s in SERVICES if service in SUBSCRIBES_TO[s])
    return (
        Topic(f"{service}.intake.v1", PARTITIONS["intake"], AGGREGATE_KEY[service],
              service, "intake", (service,)),
        Topic(f"{service}.events.v1", PARTITIONS["events"], AGGREGATE_KEY[service],
              service, "events", readers),
        Topic(f"{service}.dlq.v1", PARTITIONS["dlq"], DLQ_KEY, service, "dlq", (service,)),
    )


TOPICS: tuple[Topic, ...] = tuple(t for s in SERVICES for t in _service_topics(s))
BY_NAME: dict[str, Topic] = {t.name: t for t in TOPICS}

LAB_INTAKE = "lab.intake.v1"
LAB_EVENTS = "lab.events.v1"
LAB_DLQ = "lab.dlq.v1"


def topic_name(base: str, prefix: str = "") -> str:
    """The physical topic name: `prefix` + `base`, joined by "." unless the
    prefix already ends in ".", "-" or "_" (prefixes isolate test runs)."""
    if prefix and not prefix.endswith((".", "-", "_")):
        prefix += "."
    name = prefix + base
    if not _LEGAL.match(name) or name in (".", ".."):
        raise ValueError("illegal Kafka topic name")
    return name


def topic(name: str) -> Topic:
    """The registered topic of that (unprefixed) name; KeyError otherwise."""
    return BY_NAME[name]


def topics_for(service: str) -> tuple[Topic, ...]:
    """The topics a service owns: its intake, events and dead-letter topic."""
    if service not in SERVICES:
        raise KeyError(service)
    return tuple(t for t in TOPICS if t.owner == service)


def consumed_by(service: str) -> tuple[Topic, ...]:
    """The topics a service reads: its intake and the events it subscribes to."""
    if service not in SERVICES:
        raise KeyError(service)
    return tuple(t for t in TOPICS if service in t.consumers and t.kind != "dlq")

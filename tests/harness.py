"""What the fixtures in conftest.py need: infrastructure choice, names, Kafka helpers.

Importable from any test as `import harness` (pytest `pythonpath = ["tests"]`).

Infrastructure, decided once per test run (each piece independently):
1. KAFKA_BOOTSTRAP_SERVERS (with KAFKA_BROKER_KIND, default "kafka") /
   DATABASE_URL when set;
2. else, when a Docker engine answers within ~3 s, testcontainers: Apache
   Kafka (apache/kafka, KRaft, one node) and postgres:15;
3. else the embedded broker (Tansu) and PostgreSQL on 127.0.0.1:5432 if it
   answers, else an embedded PostgreSQL.
YGT_TEST_INFRA=embedded skips the Docker probe; YGT_TEST_INFRA=docker requires it.
The PACS: PACS_DICOMWEB_URL when set, else our own Orthanc (`start_orthanc`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from yigongti_deploy.embedded import (
    LOCAL_POSTGRES_URL,
    EmbeddedBroker,
    EmbeddedPostgres,
    free_port,
    postgres_answers,
    wait_for_broker,
)

log = logging.getLogger("yigongti.tests")

# One id per test run: names of databases, schemas, topics and groups carry it,
# so runs sharing a broker or a server never see each other's data.
RUN_ID = time.strftime("%H%M%S") + secrets.token_hex(2)
_counter = itertools.count(1)

KAFKA_IMAGE = "apache/kafka:3.9.1"
POSTGRES_IMAGE = "postgres:15"

# Set by the `kafka_bootstrap` fixture; helpers below use it when not told.
BROKER_KIND: str = os.environ.get("KAFKA_BROKER_KIND", "embedded")


def unique(prefix: str) -> str:
    """`<prefix><run id>_<n>`: unique within the run, lower-case, safe as a SQL
    identifier, topic part or group id."""
    return f"{prefix}{RUN_ID}_{next(_counter)}"


# --- choosing the infrastructure ------------------------------------------------


@cache
def docker_answers(timeout: float = 3.0) -> bool:
    """True when a Docker engine answers a ping within `timeout` seconds."""
    mode = os.environ.get("YGT_TEST_INFRA", "auto")
    if mode == "embedded":
        return False

    def ping() -> bool:
        import docker

        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        answered = pool.submit(ping).result(timeout=timeout)
    except Exception:
        answered = False
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if mode == "docker" and not answered:
        raise RuntimeError("YGT_TEST_INFRA=docker but no Docker engine answers")
    return answered


@dataclass
class Running:
    """A piece of infrastructure: where it is, what it is, how to stop it."""

    address: str  # bootstrap servers, or the admin database URL
    kind: str  # "embedded" | "kafka" for brokers; "env" | "docker" | "local" | "embedded" for PostgreSQL
    origin: str  # "env" | "docker" | "embedded" | "local"
    started_in_s: float = 0.0
    stop: Callable[[], Awaitable[None]] = field(default=lambda: _nothing())


async def _nothing() -> None:
    return None


async def start_kafka(run_dir: Path) -> Running:
    started = time.monotonic()
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        return Running(given, os.environ.get("KAFKA_BROKER_KIND", "kafka"), "env")
    if await asyncio.to_thread(docker_answers):
        container, bootstrap = await asyncio.to_thread(_start_kafka_container)
        await wait_for_broker(bootstrap, timeout_s=90)
        return Running(
            bootstrap,
            "kafka",
            "docker",
            time.monotonic() - started,
            lambda: asyncio.to_thread(container.stop),
        )
    broker = EmbeddedBroker(run_dir)
    bootstrap = await broker.start()
    return Running(bootstrap, "embedded", "embedded", time.monotonic() - started, broker.stop)


async def start_postgres() -> Running:
    started = time.monotonic()
    given = os.environ.get("DATABASE_URL")
    if given:
        return Running(given, "env", "env")
    if await asyncio.to_thread(docker_answers):
        container, url = await asyncio.to_thread(_start_postgres_container)
        return Running(
            url,
            "docker",
            "docker",
            time.monotonic() - started,
            lambda: asyncio.to_thread(container.stop),
        )
    if await postgres_answers(LOCAL_POSTGRES_URL):
        return Running(LOCAL_POSTGRES_URL, "local", "local", time.monotonic() - started)
    server = EmbeddedPostgres()
    url = await server.start()
    return Running(url, "embedded", "embedded", time.monotonic() - started, server.stop)


async def start_orthanc(run_dir: Path) -> Running | None:
    """The PACS (address: its DICOMweb root): PACS_DICOMWEB_URL, else our own Orthanc;
    None when Orthanc is not installed, an error under CI=true (never skipped there)."""
    from yigongti_deploy.orthanc import EmbeddedOrthanc, find_orthanc, require_orthanc

    given = os.environ.get("PACS_DICOMWEB_URL")
    if given:
        return Running(given, "env", "env")
    if find_orthanc() is None:
        if os.environ.get("CI") == "true":
            require_orthanc()  # raises, saying how to install it
        return None
    server = EmbeddedOrthanc(run_dir / "orthanc")
    url = await server.start()
    return Running(url, "orthanc", "embedded", server.started_in_s or 0.0, server.stop)


def _start_kafka_container():
    """Apache Kafka in KRaft mode, one node, advertised on a fixed free host port."""
    from testcontainers.core.container import DockerContainer

    port = free_port()
    container = DockerContainer(KAFKA_IMAGE)
    host = container.get_docker_client().host()
    container.with_bind_ports(9092, port)
    for key, value in {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{port}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
    }.items():
        container.with_env(key, value)
    container.start()
    return container, f"{host}:{port}"


def _start_postgres_container():
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer(
        POSTGRES_IMAGE, username="postgres", password="postgres", dbname="postgres", driver=None
    )
    container.start()
    return container, container.get_connection_url()


# --- Kafka helpers ----------------------------------------------------------------


def client_kwargs(bootstrap: str, role: str, broker_kind: str | None = None) -> dict[str, Any]:
    """aiokafka keyword arguments tuned for the broker kind (the kit's own tuning)."""
    from yigongti_kit.settings import KitSettings, kafka_client_kwargs

    settings = KitSettings(
        service_name="tests",
        kafka_bootstrap_servers=bootstrap,
        kafka_broker_kind=broker_kind or BROKER_KIND,
        enable_idempotence=None,
    )
    return kafka_client_kwargs(settings, role)


def _bytes(value: bytes | str | Mapping | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, separators=(",", ":")).encode()


async def produce(
    bootstrap: str,
    topic: str,
    key: bytes | str | None,
    value: bytes | str | Mapping | None,
    headers: Sequence[tuple[str, bytes | str]] = (),
    *,
    broker_kind: str | None = None,
    timestamp_ms: int | None = None,
):
    """Publish one record (a dict value is sent as compact JSON); returns its RecordMetadata."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client_kwargs(bootstrap, "producer", broker_kind))
    await producer.start()
    try:
        return await producer.send_and_wait(
            topic,
            value=_bytes(value),
            key=_bytes(key),
            headers=[(k, v.encode() if isinstance(v, str) else v) for k, v in headers],
            timestamp_ms=timestamp_ms,
        )
    finally:
        await producer.stop()


async def consume_until(
    bootstrap: str,
    topic: str,
    predicate: Callable[[Any], bool],
    timeout: float = 30.0,  # noqa: ASYNC109 - a deadline over several awaits
    *,
    broker_kind: str | None = None,
    group_id: str | None = None,
) -> list:
    """Read `topic` from the beginning, in its own consumer group, until a record
    satisfies `predicate`; returns every record read so far, the match last.

    Waits for the group's assignment first (about 1 s on the embedded broker).
    Raises TimeoutError (saying how many records it saw) when nothing matches.
    """
    from aiokafka import AIOKafkaConsumer

    kwargs = client_kwargs(bootstrap, "consumer", broker_kind)
    consumer = AIOKafkaConsumer(topic, group_id=group_id or unique("c"), **kwargs)
    seen: list = []
    deadline = time.monotonic() + timeout
    await consumer.start()
    try:
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no partition of {topic} assigned within {timeout:.0f} s")
            await asyncio.sleep(0.02)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"no matching record on {topic} within {timeout:.0f} s ({len(seen)} read)"
                )
            batches = await consumer.getmany(timeout_ms=int(min(remaining, 0.2) * 1000))
            for records in batches.values():
                for record in records:
                    seen.append(record)
                    if predicate(record):
                        return seen
    finally:
        await consumer.stop()


def header(record: Any, name: str) -> bytes | None:
    """The first value of header `name` of a consumed record."""
    for key, value in record.headers or ():
        if key == name:
            return value
    return None

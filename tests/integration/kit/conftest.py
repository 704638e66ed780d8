"""Fixtures of the kit's hard integration tests: the lab service in this process
with overrides (another DATABASE_URL, an in-memory span exporter), a
kit-migrated schema, and SQL helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import harness
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from labflow import EventLog, Terminal
from yigongti_kit.db import connect
from yigongti_kit.migrations import kit_migrations, migrate
from yigongti_kit.service import ServiceRuntime
from yigongti_lab.app import spec


@dataclass
class RunningLab:
    runtime: ServiceRuntime
    terminal: Terminal
    events: EventLog
    dlq: EventLog
    topics: dict[str, str]
    settings: object


@pytest_asyncio.fixture
async def start_lab(kit_settings, topics, dev_keys, kafka_bootstrap, broker_kind):
    """`await start_lab(span_exporter=None, **env_overrides) -> RunningLab`: the lab
    runtime in this process (like the `lab` fixture of the lab tests, but with
    overrides), a signing terminal and logs of lab.events.v1 and lab.dlq.v1.
    Everything is stopped after the test."""
    cleanups: list[Callable[[], Awaitable[None]]] = []
    created: dict[str, str] = {}

    async def start(*, span_exporter=None, **overrides) -> RunningLab:
        if not created:
            created.update(await topics("lab"))
        settings = kit_settings("lab", **overrides)
        runtime = ServiceRuntime(spec(), settings, span_exporter=span_exporter)
        cleanups.append(runtime.stop)
        await runtime.start()
        producer = AIOKafkaProducer(
            **harness.client_kwargs(kafka_bootstrap, "producer", broker_kind))
        await producer.start()
        cleanups.append(producer.stop)
        events, dlq = EventLog(), EventLog()
        consumer_kwargs = harness.client_kwargs(kafka_bootstrap, "consumer", broker_kind)
        await events.start(consumer_kwargs, created["lab.events.v1"])
        cleanups.append(events.stop)
        await dlq.start(consumer_kwargs, created["lab.dlq.v1"])
        cleanups.append(dlq.stop)
        terminal = Terminal(dev_keys.signer(), producer, created["lab.intake.v1"])
        # The consumer must own its partitions before the test publishes, or a
        # first record could wait for the group's join.
        await asyncio.wait_for(runtime.consumer.assigned.wait(), 30)
        return RunningLab(runtime, terminal, events, dlq, created, settings)

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()


@pytest_asyncio.fixture
async def kit_schema(database_url: str, schema: str) -> str:
    """The test's schema with the kit's tables (outbox, inbox, timers, clock)."""
    conn = await connect(database_url, schema)
    try:
        await migrate(conn, schema, [("kit", kit_migrations())])
    finally:
        await conn.close()
    return schema


@pytest_asyncio.fixture
async def sql(database_url: str, schema: str):
    """A connection inside the test's schema (search_path), closed after the test."""
    conn = await connect(database_url, schema)
    try:
        yield conn
    finally:
        await conn.close()

"""The lab service running in the test's process, on the real broker and
database, with a terminal to publish intake and a log of its events."""

from __future__ import annotations

from dataclasses import dataclass

import harness
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from labflow import EventLog, Terminal
from yigongti_kit.service import ServiceRuntime
from yigongti_lab.app import spec


@dataclass
class LabUnderTest:
    runtime: ServiceRuntime
    terminal: Terminal
    events: EventLog
    dlq: EventLog
    topics: dict[str, str]
    settings: object

    @property
    def pool(self):
        return self.runtime.pool


@pytest_asyncio.fixture
async def lab_topics(topics):
    return await topics("lab")


@pytest.fixture
def lab_overrides() -> dict:
    """Settings of the lab under test besides the defaults, e.g. a small
    MAX_RECORD_BYTES; a test changes them with
    `@pytest.mark.parametrize("lab_overrides", [{...}])`."""
    return {}


@pytest_asyncio.fixture
async def lab(kit_settings, lab_overrides, lab_topics, dev_keys, kafka_bootstrap, broker_kind):
    settings = kit_settings("lab", **lab_overrides)
    runtime = ServiceRuntime(spec(), settings)
    await runtime.start()
    producer = AIOKafkaProducer(**harness.client_kwargs(kafka_bootstrap, "producer", broker_kind))
    await producer.start()
    events, dlq = EventLog(), EventLog()
    consumer_kwargs = harness.client_kwargs(kafka_bootstrap, "consumer", broker_kind)
    await events.start(consumer_kwargs, lab_topics["lab.events.v1"])
    await dlq.start(consumer_kwargs, lab_topics["lab.dlq.v1"])
    terminal = Terminal(dev_keys.signer(), producer, lab_topics["lab.intake.v1"])
    try:
        yield LabUnderTest(runtime, terminal, events, dlq, lab_topics, settings)
    finally:
        await events.stop()
        await dlq.stop()
        await producer.stop()
        await runtime.stop()

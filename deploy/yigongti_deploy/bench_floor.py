"""The per-event floor (DESIGN §8), measured on the broker and database under test.

For N events: a producer (its own process, like the terminals of the journey)
sends N keyed records (~600 B JSON, CloudEvents headers) to a topic with P
partitions; P consumers in one process, each assigned one partition and each
with its own PostgreSQL connection, handle every record in one transaction:

- inbox insert (a `processed_events` row keyed by ce_source/ce_id, with the
  payload hash, ON CONFLICT DO NOTHING),
- state change (upsert of a small row per key),
- outbox insert (a jsonb payload of about 600 B, with the kit's outbox indexes).

"per_event" commits once per record; "per_batch" once per polled batch (the
batched variant DESIGN §8 quotes for context). Events/s = N ÷ the time from
the producer's first send to the last commit. The tables live in a schema of
their own, dropped afterwards; the topics are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import secrets
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from yigongti_kit.db import init_connection
from yigongti_kit.service import event_loop_runner

from .bench_common import BenchTarget, CpuMeter
from .embedded import create_topics

SOURCE = "/yigongti/bench-terminal"
CE_TYPE = "yigongti.bench.floor.v1"
MAX_POLL_RECORDS = 500
TIMEOUT_S = 120.0

_SCHEMA_SQL = """
CREATE TABLE processed_events (
    ce_source    text NOT NULL,
    ce_id        text NOT NULL,
    payload_hash text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ce_source, ce_id)
);
CREATE INDEX processed_events_at ON processed_events (processed_at);
CREATE TABLE state (
    key        text PRIMARY KEY,
    version    bigint NOT NULL,
    status     text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE outbox (
    seq           bigserial PRIMARY KEY,
    id            uuid NOT NULL UNIQUE,
    aggregateid   text NOT NULL,
    type          text NOT NULL,
    payload       jsonb NOT NULL,
    topic         text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
"""

_INBOX = """INSERT INTO processed_events (ce_source, ce_id, payload_hash) VALUES ($1, $2, $3)
            ON CONFLICT DO NOTHING"""
_STATE = """INSERT INTO state (key, version, status) VALUES ($1, 1, $2)
            ON CONFLICT (key) DO UPDATE SET version = state.version + 1,
                                            status = EXCLUDED.status, updated_at = now()"""
_OUTBOX = """INSERT INTO outbox (id, aggregateid, type, payload, topic)
             VALUES ($1, $2, $3, $4, $5)"""


@dataclass
class FloorResult:
    variant: str  # "per_event" or "per_batch"
    events: int
    partitions: int
    seconds: float
    events_per_s: float
    transactions: int
    produce_seconds: float  # the producer's own time to send everything
    cpu_pct_of_a_core: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_payload(i: int) -> dict[str, Any]:
    """A record shaped like lab intake (SpecimenCollected + context), ~600 B as JSON."""
    return {
        "order_id": f"O-{i:012d}",
        "barcode": f"B{i:010d}",
        "visit_id": f"V-{i:08d}",
        "patient_ref": "v1:" + "ab" * 32,
        "ordering_institution": "652325-B01",
        "lab_centre": "652300-LAB",
        "tests": ["K", "NA", "CL", "CTNI"],
        "tube": "serum_gold",
        "processing_state": "whole_blood",
        "collected_at": "2025-05-01T08:15:00.000000Z",
        "centrifuged_at": None,
        "collector_id": "qiaoren-nurse-02",
        "recollection_of": None,
        "priority": "stat",
        "note_codes": ["fasting", "morning_draw", "arm_left"],
        "shipment_id": f"SH-{i:010d}",
        "courier_id": "courier-007",
        "temperature_logger_id": "logger-0042",
        "dispatched_at": "2025-05-01T08:40:00.000000Z",
        "sequence": i,
    }


# --- producer (own process) -------------------------------------------------------


def _producer_main(pipe, kwargs: dict, topic: str, events: int, keys: int) -> None:
    with event_loop_runner() as runner:
        runner.run(_produce(pipe, kwargs, topic, events, keys))


async def _produce(pipe, kwargs: dict, topic: str, events: int, keys: int) -> None:
    records = []
    for i in range(events):
        value = json.dumps(sample_payload(i), separators=(",", ":")).encode()
        headers = [("ce_id", str(uuid.uuid4()).encode()), ("ce_source", SOURCE.encode()),
                   ("ce_type", CE_TYPE.encode()), ("ce_specversion", b"1.0")]
        records.append((f"K-{i % keys:08d}".encode(), value, headers))
    producer = AIOKafkaProducer(**kwargs)
    await producer.start()
    try:
        pipe.send("ready")
        pipe.recv()  # go
        started = time.perf_counter()
        futures = [await producer.send(topic, value=v, key=k, headers=h) for k, v, h in records]
        await asyncio.gather(*futures)
        pipe.send(time.perf_counter() - started)
    finally:
        await producer.stop()


# --- consumers (this process) -----------------------------------------------------


class _Counter:
    def __init__(self, goal: int) -> None:
        self.goal = goal
        self.done = 0
        self.transactions = 0
        self.finished = asyncio.Event()
        self.last_commit = 0.0

    def add(self, n: int) -> None:
        self.done += n
        self.transactions += 1
        if self.done >= self.goal:
            self.last_commit = time.perf_counter()
            self.finished.set()


def _decode(record) -> tuple[str, str, str, dict]:
    headers = dict(record.headers)
    value = record.value
    payload = json.loads(value)
    ce_id = headers["ce_id"].decode()
    ce_type = headers["ce_type"].decode()
    digest = hashlib.sha256(ce_type.encode() + b"\n" + value).hexdigest()
    return ce_id, digest, record.key.decode(), payload


async def _consume(consumer: AIOKafkaConsumer, conn: asyncpg.Connection, counter: _Counter,
                   out_topic: str, batched: bool) -> None:
    while not counter.finished.is_set():
        batches = await consumer.getmany(timeout_ms=100, max_records=MAX_POLL_RECORDS)
        for records in batches.values():
            if batched:
                inbox, state, outbox = [], [], []
                for record in records:
                    ce_id, digest, key, payload = _decode(record)
                    inbox.append((SOURCE, ce_id, digest))
                    state.append((key, "collected"))
                    outbox.append((uuid.uuid4(), key, "yigongti.bench.recorded.v1", payload,
                                   out_topic))
                async with conn.transaction():
                    await conn.executemany(_INBOX, inbox)
                    await conn.executemany(_STATE, state)
                    await conn.executemany(_OUTBOX, outbox)
                counter.add(len(records))
            else:
                for record in records:
                    ce_id, digest, key, payload = _decode(record)
                    async with conn.transaction():
                        await conn.execute(_INBOX, SOURCE, ce_id, digest)
                        await conn.execute(_STATE, key, "collected")
                        await conn.execute(_OUTBOX, uuid.uuid4(), key,
                                           "yigongti.bench.recorded.v1", payload, out_topic)
                    counter.add(1)


async def measure_floor(target: BenchTarget, *, events: int, partitions: int = 6,
                        batched: bool = False) -> FloorResult:
    """Produce `events` records and handle each through its transaction (see the
    module docstring); returns the throughput end to end."""
    variant = "per_batch" if batched else "per_event"
    token = secrets.token_hex(3)
    schema = f"bench_floor_{token}"
    topic = f"{target.topic_prefix}bench.floor.{token}.{variant}"
    await create_topics(target.bootstrap, [(topic, partitions)],
                        client_kwargs=target.admin_kwargs())
    admin = await asyncpg.connect(target.database_url)
    await admin.execute(f'CREATE SCHEMA "{schema}"; SET search_path = "{schema}"; {_SCHEMA_SQL}')

    consumers: list[AIOKafkaConsumer] = []
    conns: list[asyncpg.Connection] = []
    ctx = multiprocessing.get_context("spawn")
    parent_pipe, child_pipe = ctx.Pipe()
    producer_proc = ctx.Process(
        target=_producer_main,
        args=(child_pipe, target.kafka_kwargs("producer", "bench-floor"), topic, events,
              max(1, events // 4)),
        daemon=True,
    )
    producer_proc.start()
    tasks: list[asyncio.Task] = []
    try:
        counter = _Counter(events)
        for p in range(partitions):
            consumer = AIOKafkaConsumer(
                **{**target.kafka_kwargs("consumer", "bench-floor"), "group_id": None}
            )
            await consumer.start()
            tp = TopicPartition(topic, p)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            await consumer.position(tp)
            consumers.append(consumer)
            conn = await asyncpg.connect(target.database_url,
                                         server_settings={"search_path": schema})
            await init_connection(conn)
            conns.append(conn)
        await asyncio.wait_for(asyncio.to_thread(parent_pipe.recv), 60)  # producer ready
        meter = CpuMeter(target).start()
        started = time.perf_counter()
        parent_pipe.send("go")
        tasks = [asyncio.create_task(_consume(c, conn, counter, f"{topic}.out", batched))
                 for c, conn in zip(consumers, conns, strict=True)]
        waiter = asyncio.create_task(counter.finished.wait())
        done, _ = await asyncio.wait({waiter, *tasks}, timeout=TIMEOUT_S,
                                     return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            for task in done:
                task.result()  # a consumer failed: raise its error
            raise TimeoutError(f"floor {variant}: {counter.done}/{events} after {TIMEOUT_S:.0f} s")
        seconds = counter.last_commit - started
        cpu = meter.stop()
        produce_seconds = await asyncio.wait_for(asyncio.to_thread(parent_pipe.recv), 30)
        return FloorResult(variant, events, partitions, round(seconds, 3),
                           round(events / seconds, 1), counter.transactions,
                           round(produce_seconds, 3), cpu)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for consumer in consumers:
            await consumer.stop()
        for conn in conns:
            await conn.close()
        producer_proc.join(10)
        if producer_proc.is_alive():
            producer_proc.kill()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
        await _delete_topic(target, topic)


async def _delete_topic(target: BenchTarget, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=target.bootstrap, **target.admin_kwargs())
    try:
        await admin.start()
        await admin.delete_topics([topic])
    except Exception:  # noqa: BLE001 - best effort; the embedded broker forgets it anyway
        pass
    finally:
        await admin.close()

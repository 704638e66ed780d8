"""The one-machine infrastructure: broker, topics, records, databases."""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg
import harness
import pytest
from yigongti_deploy.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    create_database,
    create_topics,
    drop_database,
    free_port,
    port_answers,
    with_database,
)


async def test_embedded_broker_starts_answers_and_stops(tmp_path):
    broker = EmbeddedBroker(tmp_path)
    bootstrap = await broker.start()
    try:
        assert bootstrap == f"127.0.0.1:{broker.port}"
        assert port_answers("127.0.0.1", broker.port)
        assert broker.started_in_s is not None and broker.started_in_s < 10
        assert broker.log_path.exists()
    finally:
        await broker.stop()
    assert not port_answers("127.0.0.1", broker.port)


async def test_topics_are_created_with_their_partition_counts(kafka_bootstrap, topic_prefix):
    wanted = [(f"{topic_prefix}a.intake.v1", 6), (f"{topic_prefix}a.dlq.v1", 1)]
    assert await create_topics(kafka_bootstrap, wanted) == dict(wanted)
    # Idempotent: creating them again is fine and changes nothing.
    assert await create_topics(kafka_bootstrap, wanted) == dict(wanted)


async def test_service_topics_fixture_uses_the_registry(topics, topic_prefix):
    names = await topics("lab")
    assert names == {
        "lab.intake.v1": f"{topic_prefix}lab.intake.v1",
        "lab.events.v1": f"{topic_prefix}lab.events.v1",
        "lab.dlq.v1": f"{topic_prefix}lab.dlq.v1",
    }


async def test_record_round_trips_with_key_and_headers(kafka_bootstrap, topic_prefix):
    topic = f"{topic_prefix}roundtrip"
    await create_topics(kafka_bootstrap, [(topic, 3)])
    headers = [("ce_id", b"e-1"), ("traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01")]
    meta = await harness.produce(kafka_bootstrap, topic, "order-1", {"n": 1}, headers)
    await harness.produce(kafka_bootstrap, topic, "order-2", b"second", [("ce_id", "e-2")])

    keys: set[bytes] = set()

    def both_read(record) -> bool:  # partitions are read in no particular order
        keys.add(record.key)
        return keys == {b"order-1", b"order-2"}

    seen = await harness.consume_until(kafka_bootstrap, topic, both_read, timeout=30)
    first = next(r for r in seen if r.key == b"order-1")
    assert (first.partition, first.offset) == (meta.partition, meta.offset)
    assert first.value == b'{"n":1}'
    assert list(first.headers) == headers
    second = next(r for r in seen if r.key == b"order-2")
    assert second.value == b"second" and harness.header(second, "ce_id") == b"e-2"


async def test_consume_until_times_out_when_nothing_matches(kafka_bootstrap, topic_prefix):
    topic = f"{topic_prefix}quiet"
    await create_topics(kafka_bootstrap, [(topic, 1)])
    with pytest.raises(TimeoutError):
        await harness.consume_until(kafka_bootstrap, topic, lambda r: True, timeout=3)


async def test_database_is_created_and_dropped(admin_database_url, run_id):
    name = f"ygt_test_{run_id}_scratch"
    url = await create_database(admin_database_url, name)
    assert url == with_database(admin_database_url, name)
    assert await create_database(admin_database_url, name) == url  # idempotent
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT current_database()") == name
    finally:
        await conn.close()
    await drop_database(admin_database_url, name)
    conn = await asyncpg.connect(admin_database_url)
    try:
        assert await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name) is None
    finally:
        await conn.close()


async def test_schema_fixture_gives_a_fresh_schema(database_url, schema):
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1", schema
        )
    finally:
        await conn.close()
    assert tables == 0


async def test_unsafe_database_names_are_refused():
    with pytest.raises(ValueError):
        await create_database("postgresql://127.0.0.1:1/x", 'x"; DROP')
    with pytest.raises(ValueError):
        await drop_database("postgresql://127.0.0.1:1/x", "Robert'); --")


def test_free_port_is_free_outside_the_ephemeral_range_and_never_given_twice():
    low, _high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(port < low for port in ports)
    assert not any(port_answers("127.0.0.1", port) for port in ports[:20])


async def test_embedded_postgres_starts_serves_and_is_deleted():
    server = EmbeddedPostgres()
    url = await server.start()
    data_dir = server.log_path.parent.parent
    try:
        assert server.started_in_s is not None
        db_url = await create_database(url, "ygt_embedded_probe")
        conn = await asyncpg.connect(db_url)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
        await drop_database(url, "ygt_embedded_probe")
    finally:
        await server.stop()
    assert not data_dir.exists()


def test_docker_probe_is_time_boxed():
    started = time.monotonic()
    harness.docker_answers()  # cached after the first call of the run
    assert time.monotonic() - started < 5

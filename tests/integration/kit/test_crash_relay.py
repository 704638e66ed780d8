"""The outbox relay killed mid-batch (SIGKILL at "relay.mid_batch") restarts and
publishes every outbox row in key order with no gap, checked by ce_aggseq on
first occurrences; a second relay stays idle while the first holds the lock
(issue 2, "Checked by")."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import harness
import pytest
from aiokafka import AIOKafkaProducer
from kitflow import count, wait_until
from labflow import PATIENT, EventLog, header
from yigongti_contracts.lab.codes import Priority
from yigongti_contracts.lab.v1 import LabOrderAccepted
from yigongti_kit.outbox import Relay, add_event

AGGREGATES = 7
BATCH = 500  # the lab service's relay batch size (Relay default)


def _accepted(order_id: str) -> LabOrderAccepted:
    return LabOrderAccepted(
        order_id=order_id, visit_id="V-1", patient_ref=PATIENT,
        ordering_institution="652325-B01", lab_centre="652325-L01",
        priority=Priority.routine, tests=("K",), accepted_at=datetime.now(UTC),
    )


async def _write_rows(sql, n: int, aggregates: list[str]) -> list[str]:
    """`n` outbox rows, round-robin over `aggregates`, in one transaction; their ce_ids.
    Rows name the registered topic; the relay adds the test's prefix."""
    ids = []
    async with sql.transaction():
        for i in range(n):
            key = aggregates[i % len(aggregates)]
            ids.append(await add_event(sql, _accepted(key), topic="lab.events.v1",
                                       source="/yigongti/lab", aggregatetype="lab_order"))
    return ids


def _first_occurrences(records) -> dict[str, list[int]]:
    """Per key, the ce_aggseq of each ce_id's first record, in log order."""
    seen: set[str] = set()
    per_key: dict[str, list[int]] = {}
    # Records of one key share a partition; order within a partition is the log's.
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        ce_id = header(r, "ce_id")
        if ce_id in seen:
            continue
        seen.add(ce_id)
        per_key.setdefault(r.key.decode(), []).append(int(header(r, "ce_aggseq")))
    return per_key


@pytest.mark.slow
async def test_relay_killed_mid_batch_publishes_everything_in_key_order(
    service_process, topics, kit_env, kit_schema, sql, kafka_bootstrap, broker_kind,
):
    lab_topics = await topics("lab")
    topic = lab_topics["lab.events.v1"]
    aggregates = [f"O-relay{i}" for i in range(AGGREGATES)]
    # Two full batches and a bit: the first is marked sent, the second dies half
    # published, the third waits for the restart.
    total = 2 * BATCH + 100
    ids = await _write_rows(sql, total, aggregates)
    events = EventLog()
    await events.start(harness.client_kwargs(kafka_bootstrap, "consumer", broker_kind), topic)
    try:
        lab = await service_process("lab", kit_env("lab"), fault_point="relay.mid_batch",
                                    fault_after=2, wait_ready=False)
        assert await lab.wait_exit(60) == -9, lab.log_tail()
        assert lab.faulted
        assert await count(sql, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL") == BATCH
        # Half of the second batch reached Kafka without being marked sent.
        await events.wait_for(lambda r: True, count=BATCH + BATCH // 2 + 1)

        await lab.start()
        await wait_until(lambda: _all_sent(sql), what="outbox drained", timeout=60)
        await events.wait_for(lambda r: True, count=total + BATCH // 2 + 1, timeout=30)
    finally:
        await events.stop()

    records = events.records
    assert {header(r, "ce_id") for r in records} == set(ids)
    # Redelivered rows are the same events (same ce_id, same sequence), never new ones.
    assert len(records) > total
    per_key = _first_occurrences(records)
    assert set(per_key) == set(aggregates)
    for key, sequences in per_key.items():
        n = len([i for i in range(total) if aggregates[i % AGGREGATES] == key])
        assert sequences == list(range(1, n + 1)), key
    # Every occurrence of a ce_id carries the same sequence.
    by_id = {}
    for r in records:
        by_id.setdefault(header(r, "ce_id"), set()).add(header(r, "ce_aggseq"))
    assert all(len(s) == 1 for s in by_id.values())


async def _all_sent(sql) -> bool:
    return await count(sql, "SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0


async def test_second_relay_stays_idle_while_the_first_holds_the_lock(
    topics, topic_prefix, kit_schema, sql, database_url, kafka_bootstrap, broker_kind,
):
    topic = (await topics("lab"))["lab.events.v1"]

    def producer() -> AIOKafkaProducer:
        return AIOKafkaProducer(**harness.client_kwargs(kafka_bootstrap, "producer", broker_kind))

    def relay() -> Relay:
        return Relay(database_url=database_url, schema=kit_schema, producer_factory=producer,
                     topic_prefix=topic_prefix, poll_interval=0.1)

    first, second = relay(), relay()
    first_task = asyncio.create_task(first.run())
    second_task = None
    events = EventLog()
    await events.start(harness.client_kwargs(kafka_bootstrap, "consumer", broker_kind), topic)
    try:
        await wait_until(lambda: _true(first.is_leader), what="first relay leads")
        second_task = asyncio.create_task(second.run())
        # The second relay is connected and asking for the lock, in vain.
        await wait_until(lambda: _sessions(sql, kit_schema, 2), what="second relay connected")
        ids = await _write_rows(sql, 40, ["O-a", "O-b", "O-c"])
        await wait_until(lambda: _all_sent(sql), what="rows published")
        await asyncio.sleep(0.3)  # a few of the second relay's lock attempts
        assert (first.published, second.published) == (40, 0)
        assert not second.is_leader

        first.stop()
        await asyncio.wait_for(first_task, 10)
        await wait_until(lambda: _true(second.is_leader), what="second relay takes over")
        ids += await _write_rows(sql, 20, ["O-a", "O-d"])
        await wait_until(lambda: _all_sent(sql), what="rows published after the takeover")
        assert (first.published, second.published) == (40, 20)
        await events.wait_for(lambda r: True, count=60)
        assert sorted(header(r, "ce_id") for r in events.records) == sorted(ids)
        per_key = _first_occurrences(events.records)
        assert per_key["O-a"] == list(range(1, 14 + 10 + 1))
    finally:
        await events.stop()
        for r, task in ((first, first_task), (second, second_task)):
            r.stop()
            if task is not None:
                await asyncio.wait_for(task, 10)


async def _true(value: bool) -> bool:
    return value


async def _sessions(sql, schema: str, n: int) -> bool:
    """At least `n` relay sessions of `schema` (application_name) besides ours."""
    return await count(
        sql, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND pid <> "
        "pg_backend_pid()", schema) >= n


async def test_a_relay_whose_session_dies_is_replaced_and_nothing_is_lost(
    topics, topic_prefix, kit_schema, sql, database_url, kafka_bootstrap, broker_kind,
):
    """The leader's database session is killed (the lock goes with it): the idle
    relay takes over; every row is still published, in key order."""
    topic = (await topics("lab"))["lab.events.v1"]

    def relay() -> Relay:
        return Relay(database_url=database_url, schema=kit_schema, poll_interval=0.1,
                     topic_prefix=topic_prefix,
                     producer_factory=lambda: AIOKafkaProducer(
                         **harness.client_kwargs(kafka_bootstrap, "producer", broker_kind)))

    relays = [relay(), relay()]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    events = EventLog()
    await events.start(harness.client_kwargs(kafka_bootstrap, "consumer", broker_kind), topic)
    try:
        await wait_until(lambda: _true(any(r.is_leader for r in relays)), what="a leader")
        leader = next(r for r in relays if r.is_leader)
        ids = await _write_rows(sql, 30, ["O-x", "O-y"])
        await wait_until(lambda: _all_sent(sql), what="first rows published")
        holder = await sql.fetchval(
            """SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)
               WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = $1""",
            kit_schema)
        assert await sql.fetchval("SELECT pg_terminate_backend($1)", holder)
        ids += await _write_rows(sql, 30, ["O-x", "O-z"])
        await wait_until(lambda: _all_sent(sql), what="rows published after the session died")
        await events.wait_for(lambda r: True, count=60)
        assert {header(r, "ce_id") for r in events.records} == set(ids)
        per_key = _first_occurrences(events.records)
        assert per_key == {"O-x": list(range(1, 31)), "O-y": list(range(1, 16)),
                           "O-z": list(range(1, 16))}
        # The old leader noticed (and stood down, or led again on a new session).
        await wait_until(lambda: _true(leader.last_error is not None), what="leader noticed")
        assert sum(r.published for r in relays) >= 60
    finally:
        await events.stop()
        for r in relays:
            r.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)


async def test_a_row_the_broker_refuses_is_set_aside_and_the_rest_flows_on(
    topics, topic_prefix, kit_schema, sql, database_url, kafka_bootstrap, broker_kind,
):
    """A row too large for the broker (here: for the producer's 1 MiB request
    limit) is set aside with the error; the rows after it, of its own aggregate
    too, are published, and the gap shows in that aggregate's ce_aggseq."""
    topic = (await topics("lab"))["lab.events.v1"]
    relay = Relay(database_url=database_url, schema=kit_schema, poll_interval=0.1,
                  topic_prefix=topic_prefix,
                  producer_factory=lambda: AIOKafkaProducer(
                      **harness.client_kwargs(kafka_bootstrap, "producer", broker_kind)))
    before = await _write_rows(sql, 2, ["O-big"])
    await sql.execute(
        """INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, topic, source)
           VALUES (gen_random_uuid(), 'lab_order', 'O-big', 'yigongti.lab.order.accepted.v1',
                   jsonb_build_object('pad', repeat('x', 2000000)), 'lab.events.v1',
                   '/yigongti/lab')""")
    after = await _write_rows(sql, 3, ["O-big", "O-other"])
    task = asyncio.create_task(relay.run())
    events = EventLog()
    await events.start(harness.client_kwargs(kafka_bootstrap, "consumer", broker_kind), topic)
    try:
        await events.wait_for(lambda r: True, count=5, timeout=30)
        await wait_until(lambda: _all_sent_or_refused(sql), what="outbox drained")
    finally:
        relay.stop()
        await asyncio.wait_for(task, 10)
        await events.stop()
    assert {header(r, "ce_id") for r in events.records} == set(before + after)
    refused = await sql.fetch("SELECT aggregateid, refused_error FROM outbox"
                              " WHERE refused_at IS NOT NULL")
    assert [(r["aggregateid"], r["refused_error"]) for r in refused] == [
        ("O-big", "MessageSizeTooLargeError")]
    assert _first_occurrences(events.records) == {"O-big": [1, 2, 4, 5], "O-other": [1]}


async def _all_sent_or_refused(sql) -> bool:
    return await count(sql, "SELECT count(*) FROM outbox WHERE sent_at IS NULL"
                            " AND refused_at IS NULL") == 0

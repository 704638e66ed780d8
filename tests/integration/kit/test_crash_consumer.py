"""The lab service killed after its database commit and before its offset
commit (SIGKILL at the fault point "consumer.after_db_commit") restarts with
no double effect and nothing lost (issue 2, "Checked by")."""

from __future__ import annotations

import harness
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kitflow import count, wait_until
from labflow import EventLog, Terminal, ce_type, header, order, payload

pytestmark = pytest.mark.slow

BEFORE_START = 24  # on the intake topic before the first process starts
# The process kills itself after its first database commit: a partition's batch
# is one transaction, and the batches of other partitions may commit beside it.
DIE_AT = 1
AFTER_RESTART = 6  # published to the restarted process


async def _committed_offsets(bootstrap: str, broker_kind: str, group: str, topic: str) -> int:
    """Sum of the group's committed offsets on `topic` (records it will not see again)."""
    consumer = AIOKafkaConsumer(
        group_id=group, **harness.client_kwargs(bootstrap, "consumer", broker_kind))
    await consumer.start()
    try:
        total = 0
        for p in consumer.partitions_for_topic(topic) or await _partitions(consumer, topic):
            total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


async def test_killed_between_db_commit_and_offset_commit_has_one_effect_per_order(
    service_process, topics, kit_env, dev_keys, kafka_bootstrap, broker_kind, sql,
):
    lab_topics = await topics("lab")
    intake = lab_topics["lab.intake.v1"]
    env = kit_env("lab")
    producer = AIOKafkaProducer(**harness.client_kwargs(kafka_bootstrap, "producer", broker_kind))
    await producer.start()
    events, dlq = EventLog(), EventLog()
    consumer_kwargs = harness.client_kwargs(kafka_bootstrap, "consumer", broker_kind)
    await events.start(consumer_kwargs, lab_topics["lab.events.v1"])
    await dlq.start(consumer_kwargs, lab_topics["lab.dlq.v1"])
    terminal = Terminal(dev_keys.signer(), producer, intake)
    try:
        orders = [order(dev_keys.institution_id) for _ in range(BEFORE_START)]
        for o in orders:
            await terminal.publish(o)

        # The backlog arrives in one batch per partition; the process dies after
        # the first batch's commit, before any offset commit.
        lab = await service_process("lab", env, fault_point="consumer.after_db_commit",
                                    fault_after=DIE_AT, wait_ready=False)
        assert await lab.wait_exit(60) == -9, lab.log_tail()
        assert lab.faulted
        in_db = await count(sql, "SELECT count(*) FROM orders")
        assert 0 < in_db <= BEFORE_START
        # The fault window was really hit: rows committed whose offsets were not.
        committed = await _committed_offsets(kafka_bootstrap, broker_kind,
                                             env["CONSUMER_GROUP"], intake)
        assert committed < in_db

        await lab.start()  # the marker lets the new process run through the fault point
        more = [order(dev_keys.institution_id) for _ in range(AFTER_RESTART)]
        for o in more:
            await terminal.publish(o)
        orders += more
        published = {o.order_id for o in orders}

        await events.wait_for(
            lambda r: ce_type(r).endswith("order.accepted.v1"), count=len(published), timeout=60)
        await wait_until(
            lambda: _settled(sql, len(published)), what="every order processed", timeout=30)
    finally:
        await events.stop()
        await dlq.stop()
        await producer.stop()

    # Exactly one effect per order in the database ...
    rows = await sql.fetch("SELECT order_id, count(*) AS n FROM orders GROUP BY order_id")
    assert {r["order_id"] for r in rows} == published
    assert all(r["n"] == 1 for r in rows)
    assert await count(sql, "SELECT count(*) FROM processed_events") == len(published)
    assert await count(sql, "SELECT count(*) FROM inbox_conflicts") == 0
    assert await count(sql, "SELECT count(*) FROM outbox") == len(published)
    # ... and on the events topic: one LabOrderAccepted per order. The relay may
    # publish a row twice around a crash (same ce_id); a second *event* would
    # carry another ce_id.
    accepted: dict[str, set[str]] = {}
    for r in events.of_type("order.accepted.v1"):
        accepted.setdefault(payload(r)["order_id"], set()).add(header(r, "ce_id"))
    assert set(accepted) == published
    assert {k: v for k, v in accepted.items() if len(v) != 1} == {}
    assert events.of_type("intake.rejected.v1") == []
    assert dlq.records == []


async def _settled(sql, expected: int) -> bool:
    processed = await count(sql, "SELECT count(*) FROM processed_events")
    unsent = await count(sql, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")
    return processed >= expected and unsent == 0

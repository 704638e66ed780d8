"""Subscriptions to another service's events (kit/subscriptions.py), against the
real broker and PostgreSQL: a reader service (tests/reader_service, standing
in for settlement) reads the lab's charges from `lab.events.v1`."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import harness
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from kitflow import count, wait_until
from labflow import EventLog
from reader_service.app import spec as reader_spec
from yigongti_contracts.envelope import Envelope, to_headers
from yigongti_contracts.lab.codes import PolicyCategory, ReversalReason
from yigongti_contracts.lab.v1 import ChargesPosted, ChargesReversed, LabOrderAccepted
from yigongti_kit import events_command
from yigongti_kit.service import ServiceRuntime

TESTS = Path(__file__).resolve().parents[2]
PATIENT = "v1:" + "cd" * 32


def posted(charge_id: str, order_id: str | None = None) -> ChargesPosted:
    return ChargesPosted(
        order_id=order_id or f"O-{uuid.uuid4().hex[:10]}", charge_id=charge_id,
        visit_id="V-1", patient_ref=PATIENT, billing_institution="652301-B02",
        test_code="2823-3", item_code="250305001", policy_category=PolicyCategory.a,
        quantity=1, unit_price=Decimal("6.00"), amount=Decimal("6.00"),
        price_table_id="XJ-2024-LAB", posted_at=datetime.now(UTC))


def reversed_(charge: ChargesPosted) -> ChargesReversed:
    return ChargesReversed(
        order_id=charge.order_id, charge_id=charge.charge_id, visit_id=charge.visit_id,
        patient_ref=charge.patient_ref, billing_institution=charge.billing_institution,
        item_code=charge.item_code, amount=charge.amount,
        reason=ReversalReason.test_cancelled, reversed_at=datetime.now(UTC))


@dataclass
class LabTopic:
    """Publishes on lab.events.v1 as the lab would (or as a forger would)."""

    producer: AIOKafkaProducer
    topic: str

    async def publish(self, event, *, source: str = "/yigongti/lab", ce_id: str | None = None,
                      value: bytes | None = None, ce_type: str | None = None) -> str:
        ce_id = ce_id or str(uuid.uuid4())
        key = event.kafka_key()
        envelope = Envelope(id=ce_id, source=source, type=ce_type or event.CE_TYPE,
                            time=datetime.now(UTC), subject=key, aggseq=1)
        await self.producer.send_and_wait(
            self.topic, key=key.encode(), headers=to_headers(envelope),
            value=value if value is not None else event.model_dump_json().encode())
        return ce_id


@pytest_asyncio.fixture
async def lab_topic(topics, kafka_bootstrap, broker_kind):
    created = await topics("lab", "settlement")
    producer = AIOKafkaProducer(**harness.client_kwargs(kafka_bootstrap, "producer", broker_kind))
    await producer.start()
    try:
        yield LabTopic(producer, created["lab.events.v1"]), created
    finally:
        await producer.stop()


@pytest_asyncio.fixture
async def reader(lab_topic, kit_settings, kafka_bootstrap, broker_kind):
    """The reader service in this process, and a log of its dead-letter topic."""
    _, created = lab_topic
    runtime = ServiceRuntime(reader_spec(), kit_settings("settlement"))
    await runtime.start()
    dlq = EventLog()
    await dlq.start(harness.client_kwargs(kafka_bootstrap, "consumer", broker_kind),
                    created["settlement.dlq.v1"])
    await asyncio.wait_for(runtime.subscription_consumers["lab"].assigned.wait(), 30)
    try:
        yield runtime, dlq
    finally:
        await dlq.stop()
        await runtime.stop()


def reader_script(tmp_path: Path) -> str:
    path = tmp_path / "reader-service"
    path.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(TESTS)!r})\n"
                    "from reader_service.app import main\nmain()\n")
    path.chmod(0o755)
    return str(path)


async def test_subscription_applies_each_event_once_across_a_sigkill_and_a_redelivery(
    lab_topic, service_process, kit_env, sql, tmp_path,
):
    lab, _ = lab_topic
    charges = [posted(f"C-{i}") for i in range(30)]
    ids = [await lab.publish(c) for c in charges]
    # A type the lab publishes that the reader has no handler for: skipped.
    accepted = LabOrderAccepted.model_validate(
        {**json.loads(_example(LabOrderAccepted).model_dump_json())})
    await lab.publish(accepted)

    proc = await service_process("settlement", kit_env("settlement"), script=reader_script(
        tmp_path), fault_point="consumer.after_db_commit", wait_ready=False)
    assert await proc.wait_exit(60) == -9  # killed after its first database commit
    await proc.restart()
    await wait_until(lambda: _count_is(sql, "charges_applied", 30), what="all charges applied")

    # The same records delivered again (same ce_ids): no second effect.
    for charge, ce_id in zip(charges[:10], ids[:10], strict=True):
        await lab.publish(charge, ce_id=ce_id)
    await lab.publish(posted("C-after"))
    await wait_until(lambda: _count_is(sql, "charges_applied", 31), what="the last charge")
    assert await count(sql, "SELECT count(DISTINCT ce_id) FROM charges_applied") == 31
    # The unknown type was skipped: neither applied, held nor dead-lettered.
    assert await count(sql, "SELECT count(*) FROM held_events") == 0
    assert await count(sql, "SELECT count(*) FROM dead_letters") == 0


async def test_forged_charges_on_the_lab_topic_are_held_as_foreign_source_never_applied(
    lab_topic, reader, sql,
):
    lab, _ = lab_topic
    await lab.publish(posted("C-forged"), source="/terminals/T-0042")
    # A type the lab never publishes on its events topic (its own intake type).
    await lab.publish(posted("C-odd"), ce_type="yigongti.lab.order.placed.v1")
    await lab.publish(posted("C-real"))
    await wait_until(lambda: _count_is(sql, "charges_applied", 1), what="the real charge")
    await wait_until(lambda: _count_is(sql, "held_events", 2), what="two held")
    rows = await sql.fetch("SELECT * FROM held_events ORDER BY id")
    assert {r["reason"] for r in rows} == {"foreign_source"}
    assert all(r["record_value"] is None for r in rows)  # kept for ops without the payload
    assert await sql.fetchval("SELECT charge_id FROM charges_applied") == "C-real"


async def test_poison_record_in_a_batch_is_dead_lettered_and_its_neighbours_applied(
    lab_topic, reader, sql,
):
    lab, _ = lab_topic
    runtime, dlq = reader
    same_order = "O-poison"
    await lab.publish(posted("C-before", same_order))
    await lab.publish(posted("C-poison", same_order), value=b'{"order_id": "O-poi')
    await lab.publish(posted("C-after", same_order))
    await wait_until(lambda: _count_is(sql, "charges_applied", 2), what="both neighbours")
    letters = await dlq.wait_for(lambda r: True)
    assert dict(letters[0].headers)["dlq-error"] == b"malformed_json"
    assert letters[0].value == b'{"order_id": "O-poi'


async def test_event_arriving_before_what_it_refers_to_is_parked_then_applied(
    lab_topic, reader, sql,
):
    lab, _ = lab_topic
    charge = posted("C-late")
    # The reversal comes first (e.g. the posting was delayed upstream).
    await lab.publish(reversed_(charge))
    await wait_until(lambda: _count_is(sql, "held_events", 1), what="parked")
    assert await sql.fetchval("SELECT status FROM held_events") == "parked"
    await lab.publish(charge)
    await wait_until(lambda: _count_is(sql, "reversals_applied", 1), what="reversal applied")
    assert await sql.fetchval("SELECT status FROM held_events") == "reapplied"
    assert await count(sql, "SELECT count(*) FROM charges_applied") == 1


async def test_unapplicable_and_invalid_events_are_held_with_a_reason_and_reapplied(
    lab_topic, reader, sql, kit_settings,
):
    lab, _ = lab_topic
    await lab.publish(posted("BAD-1"))
    bad_schema = json.loads(posted("C-2").model_dump_json())
    del bad_schema["visit_id"]
    await lab.publish(posted("C-2"), value=json.dumps(bad_schema).encode())
    extra = json.loads(posted("C-3").model_dump_json())
    extra["a_field_added_later"] = {"x": 1}  # additive change on the lab's side: read anyway
    await lab.publish(posted("C-3"), value=json.dumps(extra).encode())
    await wait_until(lambda: _count_is(sql, "held_events", 2), what="two held")
    await wait_until(lambda: _count_is(sql, "charges_applied", 1), what="C-3 applied")
    held = {r["reason"]: r for r in await sql.fetch("SELECT * FROM held_events")}
    assert set(held) == {"unknown_charge_item", "schema_violation"}
    assert held["schema_violation"]["fields"] == [["visit_id", "missing"]]

    # Nothing changed: applied again, it is held again with its reason.
    settings = kit_settings("settlement")
    results = await events_command.reapply(settings, reader_spec(),
                                           ids=[held["unknown_charge_item"]["id"]])
    assert results == [(held["unknown_charge_item"]["id"], "unknown_charge_item")]
    # The cause removed (here: the row is corrected as a fixed reader would read it).
    await sql.execute(
        "UPDATE held_events SET record_value = $2 WHERE id = $1",
        held["unknown_charge_item"]["id"], posted("C-1").model_dump_json().encode())
    results = await events_command.reapply(settings, reader_spec(),
                                           reason="unknown_charge_item")
    assert results == [(held["unknown_charge_item"]["id"], "applied")]
    assert await count(sql, "SELECT count(*) FROM charges_applied") == 2


async def test_a_subscriptions_dead_letter_is_replayed_to_the_reader_alone(
    lab_topic, reader, sql, kit_settings, kafka_bootstrap, broker_kind,
):
    """`yigongti-dlq replay` runs the original through the reader's own path in
    its own database; nothing is produced onto the lab's topic, which only the lab
    writes (issue 7 item 2)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from yigongti_kit import dlq

    lab, created = lab_topic
    _, letters_log = reader
    await lab.publish(posted("C-poison"), value=b'{"charge_id": "C-poi')
    [letter_record] = await letters_log.wait_for(lambda r: True)
    await lab.publish(posted("C-next"))
    await wait_until(lambda: _count_is(sql, "charges_applied", 1), what="the next charge")

    topic = created["lab.events.v1"]
    consumer = AIOKafkaConsumer(**harness.client_kwargs(kafka_bootstrap, "consumer", broker_kind))
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        before = await consumer.end_offsets(parts)
        settings = kit_settings("settlement")
        letters = await dlq.read_dead_letters(settings, "settlement")
        assert [letter.source[0] for letter in letters] == [topic]
        assert await dlq.replay(settings, reader_spec(), letters) == ["malformed_json"]
        assert await consumer.end_offsets(parts) == before  # nothing onto the owner's topic
    finally:
        await consumer.stop()
    row = await sql.fetchrow("SELECT replayed_at, replay_outcome FROM dead_letters")
    assert row["replayed_at"] is not None and row["replay_outcome"] == "malformed_json"
    assert await count(sql, "SELECT count(*) FROM charges_applied") == 1


async def test_the_readers_span_continues_the_publishers_trace(lab_topic, reader, sql):
    """The reader's span of an event is a child of the span that published it,
    so a journey crossing services is one trace (issue 7 item 2)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from yigongti_kit.telemetry import inject_headers, setup_telemetry

    exporter = InMemorySpanExporter()
    setup_telemetry("settlement", span_exporter=exporter)
    lab, _ = lab_topic
    charge = posted("C-traced")
    key = charge.kafka_key()
    envelope = Envelope(id=str(uuid.uuid4()), source="/yigongti/lab", type=charge.CE_TYPE,
                        time=datetime.now(UTC), subject=key, aggseq=1)
    try:
        with trace.get_tracer("tests").start_as_current_span("lab publish") as published:
            await lab.producer.send_and_wait(
                lab.topic, key=key.encode(), headers=inject_headers(to_headers(envelope)),
                value=charge.model_dump_json().encode())
        await wait_until(lambda: _count_is(sql, "charges_applied", 1), what="the charge")
        ctx = published.get_span_context()
        [span] = [s for s in exporter.get_finished_spans()
                  if s.name == f"{lab.topic} process" and s.context.trace_id == ctx.trace_id]
        assert span.parent.span_id == ctx.span_id
        assert span.attributes["yigongti.outcome"] == "applied"
    finally:
        exporter.shutdown()


async def test_subscription_to_a_topic_that_does_not_exist_fails_loudly(
    topics, kit_settings, kafka_bootstrap, broker_kind,
):
    from aiokafka.admin import AIOKafkaAdminClient
    from yigongti_kit.kafka import MissingTopics

    created = await topics("settlement")  # the lab's topics are not created
    runtime = ServiceRuntime(reader_spec(), kit_settings("settlement"))
    with pytest.raises(MissingTopics) as refused:
        await runtime.start()
    await runtime.stop()
    lab_events = created["settlement.events.v1"].replace("settlement.", "lab.")
    assert refused.value.topics == [lab_events]
    admin = AIOKafkaAdminClient(**harness.client_kwargs(kafka_bootstrap, "admin", broker_kind))
    await admin.start()
    try:
        assert lab_events not in await admin.list_topics()
    finally:
        await admin.close()


async def _count_is(sql, table: str, n: int) -> bool:
    return await count(sql, f"SELECT count(*) FROM {table}") >= n


def _example(model):
    from yigongti_contracts.examples import EXAMPLES

    return EXAMPLES[model]

"""The kit's Kafka runtime on FastStream (kit/kafka.py, kit/batches.py), against
the real broker: every subscriber is what the kit built, the startup check
refuses each unsafe setting, and a fault anywhere in a batch leads to
redelivery, never to a committed skip."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from faststream.kafka import KafkaBroker
from faststream.kafka.subscriber.usecase import BatchSubscriber
from faststream.middlewares import AckPolicy
from kitflow import wait_until
from labflow import order, payload
from yigongti_kit import batches
from yigongti_kit.auth import issue_token
from yigongti_kit.kafka import (
    add_batch_subscriber,
    build_broker,
    raw_decoder,
    raw_parser,
    unsafe_settings,
)


async def test_every_subscriber_is_a_faststream_batch_subscriber_with_manual_acks(start_lab):
    lab = await start_lab()
    runtime = lab.runtime
    assert runtime.subscribers, "the runtime started no subscriber"
    for sub in runtime.subscribers:
        assert isinstance(sub, BatchSubscriber)
        assert sub.ack_policy is AckPolicy.MANUAL
        assert sub.consumer._enable_auto_commit is False
        assert {c.item_parser or sub._call_options.parser for c in sub.calls} == {raw_parser}
        assert {c.item_decoder or sub._call_options.decoder for c in sub.calls} == {raw_decoder}
    assert unsafe_settings(runtime.broker, runtime.subscribers,
                           broker_kind=lab.settings.kafka_broker_kind) == []


async def test_no_asyncapi_try_it_out_route(start_lab, dev_keys):
    lab = await start_lab()
    base = f"http://127.0.0.1:{lab.settings.http_port}"
    token = issue_token(dev_keys.auth_private_pem, user="u-1", institution="652325-L01",
                        roles=["lab_technologist"], audience="lab")
    async with httpx.AsyncClient() as http:
        for path in ("/asyncapi/try", "/asyncapi"):
            forged = {"channelName": "lab.events.v1", "message": {"forged": True}}
            # Without a token, nothing under /asyncapi answers (issue 9); with one, no such route.
            response = await http.post(base + path, json=forged)
            assert response.status_code == 401, path
            response = await http.post(base + path, json=forged,
                                       headers={"Authorization": f"Bearer {token}"})
            assert response.status_code in (404, 405), path


async def _noop(records) -> None:
    return None


@pytest.mark.parametrize("wrong", ["auto_create", "acks_1", "ack_first", "default_parser",
                                   "default_decoder", "not_batch", "no_idempotence_on_kafka"])
async def test_startup_check_refuses_each_unsafe_setting(wrong, kit_settings, topics):
    created = await topics("lab")
    settings = kit_settings("lab")
    topic = created["lab.intake.v1"]
    broker_kind = settings.kafka_broker_kind
    if wrong in ("auto_create", "acks_1"):
        broker = KafkaBroker(settings.kafka_bootstrap_servers, ack_policy=AckPolicy.MANUAL,
                             allow_auto_create_topics=wrong == "auto_create",
                             acks=1 if wrong == "acks_1" else "all", logger=None)
    else:
        broker = build_broker(settings)
    if wrong == "no_idempotence_on_kafka":
        broker_kind = "kafka"  # what the embedded broker cannot do, Apache Kafka must
    if wrong in ("ack_first", "default_parser", "default_decoder", "not_batch"):
        options = dict(group_id="g", batch=wrong != "not_batch",
                       ack_policy=AckPolicy.ACK_FIRST if wrong == "ack_first"
                       else AckPolicy.MANUAL)
        if wrong != "default_parser":
            options["parser"] = raw_parser
        if wrong != "default_decoder":
            options["decoder"] = raw_decoder
        broker.subscriber(topic, **options)(_noop)
    else:
        add_batch_subscriber(broker, settings, topic=topic, group_id="g", handler=_noop)
    await broker.start()
    try:
        problems = unsafe_settings(broker, list(broker.subscribers), broker_kind=broker_kind)
    finally:
        await broker.stop()
    expected = {
        "auto_create": "topic auto-creation is on",
        "acks_1": "acks=1",
        "ack_first": "ack policy ACK_FIRST",
        "default_parser": "not the kit's raw parser",
        "default_decoder": "not the kit's raw decoder",
        "not_batch": "not a batch subscriber",
        "no_idempotence_on_kafka": "not idempotent",
    }[wrong]
    assert any(expected in p for p in problems), problems


class _FailOnce:
    """Replaces a method of the kit's batch handling: raises once, then behaves."""

    def __init__(self, original):
        self.original = original
        self.raised = 0

    async def __call__(self, *args, **kwargs):
        if not self.raised:
            self.raised += 1
            raise RuntimeError("a fault of the kit itself")
        return await self.original(*args, **kwargs)


@pytest.mark.parametrize("where", ["outside_any_record", "between_db_and_offset_commit"])
async def test_a_fault_in_the_batch_handler_leads_to_redelivery_never_a_skip(
    where, start_lab, dev_keys, monkeypatch, sql,
):
    lab = await start_lab()
    handler = lab.runtime.consumer
    if where == "outside_any_record":
        fail = _FailOnce(handler._handle_partition)
        monkeypatch.setattr(handler, "_handle_partition", fail)
    else:
        fail = _FailOnce(handler._commit)
        monkeypatch.setattr(handler, "_commit", fail)
    orders = [order(dev_keys.institution_id) for _ in range(8)]
    for o in orders:
        await lab.terminal.publish(o)
    await wait_until(lambda: _accepted(lab, len(orders)), what="every order accepted")
    assert fail.raised == 1
    # Once each: a redelivery of what was already committed is a duplicate.
    ids = [payload(r)["order_id"] for r in lab.events.of_type("order.accepted.v1")]
    assert sorted(ids) == sorted(o.order_id for o in orders)
    assert await sql.fetchval("SELECT count(*) FROM orders") == len(orders)
    # Recovered: ready again, the backoff reset.
    await wait_until(lambda: _ready(lab), what="consumer ready")
    assert handler._backoff == batches.BACKOFF_MIN_S
    # And nothing is skipped afterwards either: the committed offsets reach the end.
    last = order(dev_keys.institution_id)
    await lab.terminal.publish(last)
    await wait_until(lambda: _accepted(lab, len(orders) + 1), what="the last order")


async def _accepted(lab, n: int) -> bool:
    return len(lab.events.of_type("order.accepted.v1")) >= n


async def _ready(lab) -> bool:
    await asyncio.sleep(0)
    return "consumer" not in lab.runtime.health.failing()

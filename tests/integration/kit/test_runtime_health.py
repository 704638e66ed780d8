"""A service that cannot go on says so, and one that can goes on serving
(issue 8 items 12, 13, 14): liveness fails when a part of the runtime died
for good; readiness follows what HTTP needs (the database), with the
consumer's and the broker's state in its body and in metrics; /metrics is
scraped in Prometheus format."""

from __future__ import annotations

import asyncio
import dataclasses
import re

import httpx
import pytest
from harness_proxy import TcpProxy
from kitflow import wait_until
from labflow import order
from yigongti_deploy.embedded import EmbeddedBroker, create_topics, free_port
from yigongti_kit.auth import issue_token
from yigongti_kit.service import ServiceRuntime
from yigongti_lab.app import spec


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as http:
        return await http.get(url)


async def test_a_subscriber_that_died_fails_liveness_within_ten_seconds(start_lab):
    lab = await start_lab()
    base = f"http://127.0.0.1:{lab.settings.http_port}"
    assert (await _get(base + "/healthz")).status_code == 200
    # The consumer stops behind FastStream's back: its poll loop ends for good.
    await lab.runtime.consumer.subscriber.consumer.stop()

    async def dead() -> bool:
        return (await _get(base + "/healthz")).status_code == 503

    await wait_until(dead, timeout=10, what="liveness 503")
    body = (await _get(base + "/healthz")).json()
    assert "consumer" in body["failing"]


@pytest.fixture
async def own_broker(tmp_path):
    """A broker of this test's own, which it may stop."""
    broker = EmbeddedBroker(tmp_path / "broker")
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


async def test_a_broker_outage_keeps_http_ready_and_is_shown_within_seconds(
    own_broker, start_lab, kit_settings, dev_keys,
):
    from yigongti_contracts.topics import topic_name, topics_for

    prefix = kit_settings("lab").topic_prefix
    await create_topics(own_broker.bootstrap, [(topic_name(t.name, prefix), t.partitions)
                                               for t in topics_for("lab")])
    lab = await start_lab(KAFKA_BOOTSTRAP_SERVERS=own_broker.bootstrap)
    base = f"http://127.0.0.1:{lab.settings.http_port}"
    assert (await _get(base + "/readyz")).status_code == 200
    await own_broker.stop()

    async def broker_shown_down() -> bool:
        body = (await _get(base + "/readyz")).json()
        return body.get("components", {}).get("broker", {}).get("ready") is False

    await wait_until(broker_shown_down, timeout=10, what="the broker shown down")
    # Still ready: staff and clinics' HTTP needs only the database.
    response = await _get(base + "/readyz")
    assert response.status_code == 200
    token = issue_token(dev_keys.auth_private_pem, user="u-1",
                        institution=dev_keys.institution_id, roles=["clinician"],
                        audience="lab")
    async with httpx.AsyncClient(timeout=5, headers={"Authorization": f"Bearer {token}"}) as h:
        assert (await h.get(base + "/feed")).status_code == 200
    metrics = (await _get(f"http://127.0.0.1:{lab.runtime.metrics_port}/metrics")).text
    assert _value(metrics, "yigongti_broker_up", lab.settings.db_schema) == 0


def _value(text: str, name: str, schema: str) -> float:
    """The sum of the samples of metric `name` labelled with this test's schema
    (other runtimes of this test process expose theirs too)."""
    total, found = 0.0, False
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:_[a-z]+)?(\{{[^}}]*\}})? (\S+)$", line)
        if match and f'schema="{schema}"' in (match.group(1) or ""):
            total += float(match.group(2))
            found = True
    assert found, f"{name} not exposed for {schema}"
    return total


async def test_metrics_show_outbox_backlog_and_consumer_lag(start_lab, dev_keys, database_url):
    proxy = TcpProxy.for_url(database_url)
    await proxy.start()
    try:
        lab = await start_lab(DATABASE_URL=proxy.url_through(database_url))
        metrics_url = f"http://127.0.0.1:{lab.runtime.metrics_port}/metrics"
        # A backlog in the outbox: the relay is stopped while orders come in.
        lab.runtime.relay.stop()
        for _ in range(5):
            await lab.terminal.publish(order(dev_keys.institution_id))

        async def backlog() -> bool:
            return _value((await _get(metrics_url)).text, "yigongti_outbox_backlog",
                          lab.settings.db_schema) >= 5

        await wait_until(backlog, timeout=20, what="outbox backlog shown")
        # Lag: the database is away while more orders come in.
        await proxy.cut()
        for _ in range(5):
            await lab.terminal.publish(order(dev_keys.institution_id))

        async def lag() -> bool:
            return _value((await _get(metrics_url)).text, "yigongti_consumer_lag",
                          lab.settings.db_schema) >= 5

        await wait_until(lag, timeout=20, what="consumer lag shown")
        await proxy.restore()
    finally:
        await proxy.close()


async def test_relay_backoff_starts_again_from_its_minimum_after_a_recovery(
    start_lab, dev_keys, database_url,
):
    from yigongti_kit import outbox

    proxy = TcpProxy.for_url(database_url)
    await proxy.start()
    try:
        lab = await start_lab(DATABASE_URL=proxy.url_through(database_url))
        relay = lab.runtime.relay
        await proxy.cut()
        await wait_until(lambda: _at_least(relay, 1.0), timeout=20, what="relay backing off")
        await proxy.restore()
        await lab.terminal.publish(order(dev_keys.institution_id))
        await wait_until(lambda: _ready(lab), timeout=20, what="relay leading again")
        # Its first round after the recovery sets the backoff back to the minimum.
        await wait_until(lambda: _backoff_is(relay, outbox.RELAY_BACKOFF_MIN_S), timeout=5,
                         what="backoff back at its minimum")
    finally:
        await proxy.close()


async def _at_least(relay, seconds: float) -> bool:
    await asyncio.sleep(0)
    return relay.backoff >= seconds


async def _ready(lab) -> bool:
    await asyncio.sleep(0.05)
    return lab.runtime.relay.is_leader and "relay" not in lab.runtime.health.failing()


async def _backoff_is(relay, seconds: float) -> bool:
    await asyncio.sleep(0)
    return relay.backoff == seconds


async def test_a_service_is_not_ready_until_every_listener_is_bound(kit_settings, topics):
    """Seen once in CI: a service answered /readyz 200 on its HTTP port, then
    failed to bind its metrics port and went down; whoever waited on /readyz
    went on. Here the last listener (the lab's MLLP port, `spec.extra`) takes
    half a second and then fails: /readyz must not say ready meanwhile."""

    async def bind_fails_late(runtime) -> None:
        await asyncio.sleep(0.5)
        raise OSError("address already in use")

    await topics("lab")
    http_port = free_port()
    runtime = ServiceRuntime(dataclasses.replace(spec(), extra=bind_fails_late),
                             kit_settings("lab", HTTP_PORT=str(http_port)))
    starting = asyncio.create_task(runtime.start())
    answers: list[int] = []
    try:
        async with httpx.AsyncClient(timeout=1) as http:
            while not starting.done():
                try:
                    answers.append((await http.get(
                        f"http://127.0.0.1:{http_port}/readyz")).status_code)
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.01)
        with pytest.raises(OSError, match="already in use"):
            await starting
    finally:
        await runtime.stop()
    assert 503 in answers  # HTTP served while the last listener was still binding
    assert 200 not in answers

"""PostgreSQL unreachable for longer than any retry budget, and longer than the
consumer's max_poll_interval: the lab reports not ready, dead-letters and
rejects nothing, stays the same member of its consumer group, and processes
every record once the database is back (DESIGN §6 infrastructure faults).

The shared server is not stopped: a cuttable TCP proxy sits between the
service and PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from harness_proxy import TcpProxy
from kitflow import wait_until
from labflow import ce_type, header, order, payload

OUTAGE_S = 7.0  # longer than the consumer's and the relay's longest backoff (5 s)
MAX_POLL_INTERVAL_MS = 3000  # shorter than the outage: a blocking retry would leave the group


@pytest.fixture
async def pg_proxy(database_url):
    proxy = TcpProxy.for_url(database_url)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


async def _readyz(client: httpx.AsyncClient, url: str) -> int:
    return (await client.get(url)).status_code


async def test_database_outage_pauses_intake_and_loses_nothing(
    pg_proxy, start_lab, database_url, sql, dev_keys,
):
    lab = await start_lab(DATABASE_URL=pg_proxy.url_through(database_url),
                          KAFKA_MAX_POLL_INTERVAL_MS=MAX_POLL_INTERVAL_MS)
    coordinator = lab.runtime.consumer.subscriber.consumer._coordinator
    member = (coordinator.member_id, coordinator.generation)
    readyz = f"http://127.0.0.1:{lab.settings.http_port}/readyz"
    accepted = lambda r: ce_type(r).endswith("order.accepted.v1")  # noqa: E731
    async with httpx.AsyncClient(timeout=5) as http:
        first = order(dev_keys.institution_id)
        await lab.terminal.publish(first)
        await lab.events.wait_for(accepted)
        assert await _readyz(http, readyz) == 200

        # A burst in flight when the database goes: some records are handled
        # before, some are cut mid-transaction (even mid-commit), some wait.
        burst = [order(dev_keys.institution_id) for _ in range(12)]
        for o in burst:
            await lab.terminal.publish(o)
        await wait_until(lambda: _processed_at_least(sql, 4), what="burst under way",
                         interval=0.002)
        await pg_proxy.cut()
        cut_at = time.monotonic()
        during = [order(dev_keys.institution_id) for _ in range(6)]
        for o in during[:3]:
            await lab.terminal.publish(o)
        await wait_until(lambda: _status_is(http, readyz, 503), what="readiness 503")
        assert not lab.runtime.health.ready
        # The consumer notices when it next touches the database (the relay or
        # the timer poller may have been first).
        await wait_until(lambda: _failing(lab, "consumer"), what="consumer not ready")
        await asyncio.sleep(OUTAGE_S / 2 - (time.monotonic() - cut_at))
        for o in during[3:]:
            await lab.terminal.publish(o)
        await asyncio.sleep(OUTAGE_S - (time.monotonic() - cut_at))
        # Still down, still not ready; nothing refused or dead-lettered meanwhile.
        assert await _readyz(http, readyz) == 503
        # The relay and the timer poller say so too, not only the consumer.
        assert {"consumer", "relay", "timers"} <= set(lab.runtime.health.failing())
        assert lab.events.of_type("intake.rejected.v1") == []
        assert lab.dlq.records == []

        await pg_proxy.restore()
        after = order(dev_keys.institution_id)
        await lab.terminal.publish(after)
        orders = [first, *burst, *during, after]
        restored_at = time.monotonic()
        await wait_until(lambda: _accepted_all(lab.events, orders), what="every order accepted",
                         timeout=45)
        recovery_s = time.monotonic() - restored_at
        await wait_until(lambda: _status_is(http, readyz, 200), what="ready again")

    # The outage outlasted max_poll_interval, yet the consumer never left its
    # group: the partitions were paused while FastStream kept polling.
    assert (coordinator.member_id, coordinator.generation) == member
    # Resumes within the longest backoff (5 s) of the consumer and of the relay.
    assert recovery_s < 15, recovery_s
    published = {o.order_id for o in orders}
    ids: dict[str, set[str]] = {}
    for r in lab.events.of_type("order.accepted.v1"):
        ids.setdefault(payload(r)["order_id"], set()).add(header(r, "ce_id"))
    assert set(ids) == published
    assert all(len(v) == 1 for v in ids.values())
    assert lab.events.of_type("intake.rejected.v1") == []
    assert lab.dlq.records == []
    # `sql` connects directly, not through the proxy.
    rows = await sql.fetch("SELECT order_id, count(*) AS n FROM orders GROUP BY order_id")
    processed = await sql.fetchval("SELECT count(*) FROM processed_events")
    assert {r["order_id"]: r["n"] for r in rows} == dict.fromkeys(published, 1)
    assert processed == len(published)


async def _failing(lab, component: str) -> bool:
    return component in lab.runtime.health.failing()


async def _status_is(client: httpx.AsyncClient, url: str, status: int) -> bool:
    return await _readyz(client, url) == status


async def _accepted_all(events, orders) -> bool:
    seen = {payload(r)["order_id"] for r in events.of_type("order.accepted.v1")}
    return seen >= {o.order_id for o in orders}


async def _processed_at_least(sql, n: int) -> bool:
    return await sql.fetchval("SELECT count(*) FROM processed_events") >= n

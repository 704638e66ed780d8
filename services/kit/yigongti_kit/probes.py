"""What the runtime watches on its own, every few seconds (DESIGN §6):

- the database: a `SELECT 1` through the pool sets readiness ("database",
  the one component HTTP needs); a login refused (SQLSTATE class 28, a
  rotated password) for longer than DB_AUTH_RETRY_S fails liveness, so the
  pod restarts and reads the new Secret;
- the broker: a metadata request with a short timeout sets the "broker"
  component and the `yigongti.broker_up` gauge, so a stopped broker shows
  within seconds, not when the next publish times out;
- consumer lag per partition (`yigongti.consumer_lag`): the end offset the
  broker reports (ListOffsets) or, when larger, the offset after the last
  record this consumer fetched, minus the group's committed offset. The
  embedded broker's ListOffsets answers the base offset of the last record
  batch + 1 (under the true end after batched sends); what the consumer has
  fetched is exact, so the larger of the two is used;
- the outbox: rows waiting (`yigongti.outbox_backlog`) and rows the broker
  refused for good (`yigongti.outbox_refused_rows`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import asyncpg

from .db import fault_kind
from .health import Health
from .telemetry import background_context, metrics

log = logging.getLogger(__name__)

DATABASE_EVERY_S = 1.0
BROKER_EVERY_S = 2.0
LAG_EVERY_S = 5.0
PROBE_TIMEOUT_S = 2.0


class Probes:
    def __init__(self, *, pool: asyncpg.Pool, health: Health, schema: str, service: str,
                 auth_retry_s: float, broker_client: Callable[[], object | None],
                 consumers: Callable[[], Sequence[object]]) -> None:
        self.pool = pool
        self.health = health
        self.schema = schema
        self.service = service
        self.auth_retry_s = auth_retry_s
        self.broker_client = broker_client  # the aiokafka client the broker's admin uses
        self.consumers = consumers  # the batch handlers whose subscribers to watch
        self._auth_failing_since: float | None = None
        self._stopping = asyncio.Event()
        health.add_liveness("database_login", self._login_alive)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        background_context()
        next_broker = next_lag = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            await self._database()
            if loop.time() >= next_broker:
                await self._broker()
                next_broker = loop.time() + BROKER_EVERY_S
            if loop.time() >= next_lag:
                await self._lag_and_backlog()
                next_lag = loop.time() + LAG_EVERY_S
            try:
                await asyncio.wait_for(self._stopping.wait(), DATABASE_EVERY_S)
            except TimeoutError:
                pass

    # -- the database ------------------------------------------------------------

    async def _database(self) -> None:
        try:
            await asyncio.wait_for(self.pool.fetchval("SELECT 1"), PROBE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - every failure is a reason to report
            kind = fault_kind(exc) or "error"
            if kind == "authentication":
                self._auth_failing_since = self._auth_failing_since or time.monotonic()
            self.health.set_ready("database", False, f"{kind}: {type(exc).__name__}")
            return
        self._auth_failing_since = None
        self.health.set_ready("database", True)

    def _login_alive(self) -> str | None:
        since = self._auth_failing_since
        if since is not None and time.monotonic() - since > self.auth_retry_s:
            return f"database login refused for {time.monotonic() - since:.0f} s"
        return None

    # -- the broker -----------------------------------------------------------------

    async def _broker(self) -> None:
        client = self.broker_client()
        up = False
        if client is not None:
            try:
                await asyncio.wait_for(client.fetch_all_metadata(), PROBE_TIMEOUT_S)
                up = True
            except Exception as exc:  # noqa: BLE001 - unreachable, in any form
                self.health.set_ready("broker", False, f"unreachable: {type(exc).__name__}")
        if up:
            self.health.set_ready("broker", True)
        metrics().broker_up.set(1 if up else 0, {"service": self.service,
                                                 "schema": self.schema})

    # -- lag and backlog -------------------------------------------------------------

    async def _lag_and_backlog(self) -> None:
        m = metrics()
        try:
            row = await asyncio.wait_for(self.pool.fetchrow(
                """SELECT count(*) FILTER (WHERE refused_at IS NULL) AS waiting,
                          count(*) FILTER (WHERE refused_at IS NOT NULL) AS refused
                   FROM outbox WHERE sent_at IS NULL"""), PROBE_TIMEOUT_S)
            m.outbox_backlog.set(row["waiting"], {"schema": self.schema})
            m.outbox_refused_rows.set(row["refused"], {"schema": self.schema})
        except Exception as exc:  # noqa: BLE001 - the database probe reports it
            log.debug("backlog not measured: %s", type(exc).__name__)
        for handler in self.consumers():
            subscriber = handler.subscriber
            consumer = getattr(subscriber, "consumer", None)
            if consumer is None:
                continue
            try:
                await self._lag(handler, consumer)
            except Exception as exc:  # noqa: BLE001 - the broker probe reports it
                log.debug("lag not measured: %s", type(exc).__name__)

    async def _lag(self, handler, consumer) -> None:
        assigned = sorted(consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))
        if not assigned:
            return
        ends = await asyncio.wait_for(consumer.end_offsets(assigned), PROBE_TIMEOUT_S)
        for tp in assigned:
            committed = await asyncio.wait_for(consumer.committed(tp), PROBE_TIMEOUT_S) or 0
            end = max(ends.get(tp, 0), handler.fetched_end(tp))
            metrics().consumer_lag.set(max(end - committed, 0), {
                "schema": self.schema, "topic": tp.topic, "partition": tp.partition})

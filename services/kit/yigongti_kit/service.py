"""Runs one service: pool and migrations, the Kafka subscribers (intake, and
the events of other services it reads), the outbox relay, the timer poller
and the HTTP app, in one process; stops them in order on SIGTERM, finishing
the work in hand."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from yigongti_contracts.topics import topic_name

from .consumer import Handler, IntakeConsumer
from .db import connect, create_pool
from .health import Health
from .http import bound_port, create_http_app, serve
from .intake_auth import load_terminals
from .intake_guard import TerminalGuard
from .kafka import (
    UnsafeKafkaSettings,
    add_batch_subscriber,
    build_broker,
    require_log_append_time,
    require_topics,
    unsafe_settings,
)
from .migrations import kit_migrations, migrate
from .outbox import Relay
from .probes import Probes
from .settings import KitSettings, kafka_client_kwargs
from .subscriptions import Subscription, SubscriptionConsumer
from .subscriptions import timer_handlers as held_timer_handlers
from .telemetry import (
    configure_logging,
    flush_spans,
    instrument_asyncpg,
    prometheus_app,
    setup_telemetry,
    untraced_sql,
)
from .timers import TimerHandler, TimerPoller

log = logging.getLogger(__name__)


@dataclass
class ServiceSpec:
    """What a service brings; the runtime brings the rest."""

    name: str
    aggregatetype: str
    migrations: Path
    handlers: dict[str, Handler]
    timer_handlers: dict[str, TimerHandler] = field(default_factory=dict)
    routes: Callable[[FastAPI], None] | None = None
    signed_intake: bool = True
    # Other services' events it reads (subscriptions.py), one per owner.
    subscriptions: tuple[Subscription, ...] = ()
    # The intake consumer's fetch wait, where no one waits on the intake's
    # outcome (kafka.consumer_tuning); None: the broker kind's default.
    intake_fetch_max_wait_ms: int | None = None
    # The relay's pause after publishing (outbox.Relay.min_wait); None: 2 ms,
    # for events someone waits on (a critical value on its way to a clinic).
    relay_min_wait_s: float | None = None
    # Extra listeners a service runs beside HTTP (e.g. the lab's MLLP port):
    # started last, given the runtime; returns how to stop it (first at shutdown).
    extra: Callable[[ServiceRuntime], Awaitable[Callable[[], Awaitable[None]] | None]] | None = None


class ServiceRuntime:
    def __init__(self, spec: ServiceSpec, settings: KitSettings, *, span_exporter=None) -> None:
        self.spec = spec
        self.settings = settings
        self.span_exporter = span_exporter
        self.health = Health()
        self.pool: asyncpg.Pool | None = None
        self.broker = None  # FastStream's KafkaBroker: every subscriber runs on it
        self.subscribers: list = []
        self.consumer: IntakeConsumer | None = None
        self.subscription_consumers: dict[str, SubscriptionConsumer] = {}
        self.relay: Relay | None = None
        self.poller: TimerPoller | None = None
        self.probes: Probes | None = None
        self.app: FastAPI | None = None
        self.metrics_port: int | None = None  # where /metrics is served
        self._server = None
        self._metrics_server = None
        self._tasks: list[asyncio.Task] = []
        self._stop_extra: Callable[[], Awaitable[None]] | None = None

    def topic(self, kind: str) -> str:
        return topic_name(f"{self.spec.name}.{kind}.v1", self.settings.topic_prefix)

    @property
    def source(self) -> str:
        return f"/yigongti/{self.spec.name}"

    async def start(self) -> None:
        s = self.settings
        telemetry = setup_telemetry(self.spec.name, s, span_exporter=self.span_exporter)
        if telemetry.exporting_spans:
            instrument_asyncpg()
        conn = await connect(s.database_url, s.db_schema)
        try:
            with untraced_sql():  # start-up work of no trace
                await migrate(conn, s.db_schema, [("kit", kit_migrations()),
                                                  (self.spec.name, self.spec.migrations)])
                if s.terminals_file:
                    await load_terminals(conn, s.terminals_file)
        finally:
            await conn.close()
        self.pool = await create_pool(s.database_url, s.db_schema, max_size=s.db_pool_max_size)

        self.broker = build_broker(s)
        self.consumer = intake_consumer(self.spec, s, self.pool, on_ready=self.health.set_ready)
        group = s.consumer_group or self.spec.name
        self._subscribe(self.consumer, self.consumer.topic, group,
                        self.spec.intake_fetch_max_wait_ms)
        self.subscription_consumers = subscription_consumers(
            self.spec, s, self.pool, on_ready=self.health.set_ready)
        for reader in self.subscription_consumers.values():
            self._subscribe(reader, reader.topic, f"{group}.{reader.subscription.owner}.events.v1",
                            reader.subscription.fetch_max_wait_ms)
        self.relay = Relay(
            database_url=s.database_url,
            schema=s.db_schema,
            topic_prefix=s.topic_prefix,
            producer_factory=lambda: AIOKafkaProducer(**kafka_client_kwargs(s, "producer")),
            min_wait=self.spec.relay_min_wait_s,
            outbox_retention=timedelta(hours=s.outbox_retention_h),
            inbox_retention=timedelta(hours=s.inbox_retention_h),
            on_ready=self.health.set_ready,
        )
        self.poller = TimerPoller(self.pool, {**held_timer_handlers(self.subscription_consumers),
                                              **self.spec.timer_handlers},
                                  on_ready=self.health.set_ready)
        self.health.set_ready("consumer", False, "starting")
        self.health.set_ready("database", True)  # migrated and pooled just now
        self.health.set_ready("listening", False, "starting")
        self.probes = Probes(
            pool=self.pool, health=self.health, schema=s.db_schema, service=self.spec.name,
            auth_retry_s=s.db_auth_retry_s,
            broker_client=lambda: getattr(self.broker.config.admin, "client", None)
            and self.broker.config.admin.client._client,
            consumers=lambda: [self.consumer, *self.subscription_consumers.values()])

        self.app = create_http_app(f"yigongti {self.spec.name}", s, health=self.health)
        self.app.state.pool = self.pool
        self.app.state.runtime = self
        if self.spec.routes:
            self.spec.routes(self.app)
        await self._start_kafka()
        for name, coro in (("relay", self.relay.run()), ("timers", self.poller.run()),
                           ("probes", self.probes.run())):
            task = asyncio.create_task(coro, name=f"{self.spec.name}-{name}")
            task.add_done_callback(self._task_done)
            self.health.add_liveness(name, lambda task=task: _task_alive(task))
            self._tasks.append(task)
        self._server, server_task = await serve(self.app, s.http_host, s.http_port)
        self._tasks.append(server_task)
        self._metrics_server, metrics_task = await serve(prometheus_app(), s.http_host,
                                                         s.metrics_port)
        self.metrics_port = bound_port(self._metrics_server)
        self._tasks.append(metrics_task)
        if self.spec.extra is not None:
            self._stop_extra = await self.spec.extra(self)
        self.health.set_ready("listening", True)
        log.info("%s started on %s:%s", self.spec.name, s.http_host, s.http_port)

    def _subscribe(self, handler, topic: str, group_id: str,
                   fetch_max_wait_ms: int | None = None) -> None:
        handler.subscriber = add_batch_subscriber(
            self.broker, self.settings, topic=topic, group_id=group_id, handler=handler,
            listener=handler.listener(), fetch_max_wait_ms=fetch_max_wait_ms)
        self.subscribers.append(handler.subscriber)

    async def _start_kafka(self) -> None:
        """Connect FastStream's broker and start its subscribers, after checking
        that what it built keeps the guarantees (kafka.py)."""
        await self.broker.connect()
        await require_topics(self.broker, [t for sub in self.subscribers for t in sub.topic_names])
        if self.settings.kafka_broker_kind == "kafka":
            # Intake freshness rests on the broker's clock (consumer.py).
            await require_log_append_time(self.broker, [self.consumer.topic])
        await self.broker.start()
        problems = unsafe_settings(self.broker, self.subscribers,
                                   broker_kind=self.settings.kafka_broker_kind)
        relay_producer = self.relay.producer_factory()  # built, never started
        if relay_producer._sender._acks != -1:
            problems.append("relay: producer acks is not all")
        if self.settings.kafka_broker_kind == "kafka" and relay_producer._txn_manager is None:
            problems.append("relay: producer not idempotent on Apache Kafka")
        await relay_producer.stop()
        if problems:
            await self.broker.stop()
            raise UnsafeKafkaSettings("; ".join(problems))
        for handler in (self.consumer, *self.subscription_consumers.values()):
            self.health.set_ready(handler.component, True, "")
            self.health.add_liveness(handler.component,
                                     lambda sub=handler.subscriber: _subscriber_alive(sub))

    def _task_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s stopped: %r", task.get_name(), task.exception())
            self.health.set_ready(task.get_name(), False, "stopped")

    async def stop(self) -> None:
        """Graceful: stop taking work, finish what is in hand, then close."""
        self.health.set_ready("shutdown", False, "draining")
        if self._stop_extra is not None:
            await self._stop_extra()
        for server in (self._server, self._metrics_server):
            if server is not None:
                server.should_exit = True
        for handler in (self.consumer, *self.subscription_consumers.values()):
            if handler is not None:
                handler.stop()
        for part in (self.poller, self.relay, self.probes):
            if part is not None:
                part.stop()
        if self.broker is not None:
            # Subscribers first (each finishes the batch in hand, up to the
            # graceful timeout), then the producer the dead letters use.
            await self.broker.stop()
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=self.settings.graceful_timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self.pool is not None:
            await self.pool.close()
        flush_spans()

    async def run_until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("%s stopping", self.spec.name)
        await self.stop()


def _task_alive(task: asyncio.Task) -> str | None:
    if task.done():
        return "ended" if task.cancelled() or task.exception() is None \
            else f"failed: {type(task.exception()).__name__}"
    return None


def _subscriber_alive(subscriber) -> str | None:
    """A FastStream subscriber is alive while its poll loop runs."""
    if not subscriber.running:
        return "stopped"
    if subscriber.consumer is None or subscriber.consumer._closed:
        return "its consumer was closed"
    loops = [t for t in getattr(subscriber, "tasks", []) if not t.done()]
    if not loops:
        return "its poll loop ended"
    return None


def intake_consumer(spec: ServiceSpec, settings: KitSettings, pool: asyncpg.Pool, *,
                    on_ready=None) -> IntakeConsumer:
    """The handler of the service's intake (also used without Kafka: a replay)."""
    return IntakeConsumer(
        pool=pool,
        topic=topic_name(f"{spec.name}.intake.v1", settings.topic_prefix),
        events_topic=f"{spec.name}.events.v1",  # registered name: the relay prefixes it
        dlq_topic=topic_name(f"{spec.name}.dlq.v1", settings.topic_prefix),
        source=f"/yigongti/{spec.name}",
        service=spec.name,
        aggregatetype=spec.aggregatetype,
        handlers=spec.handlers,
        guard=TerminalGuard(max_skew_s=settings.intake_max_skew_s) if spec.signed_intake
        else None,
        max_record_bytes=settings.max_record_bytes,
        on_ready=on_ready,
    )


def subscription_consumers(spec: ServiceSpec, settings: KitSettings, pool: asyncpg.Pool, *,
                           on_ready=None) -> dict[str, SubscriptionConsumer]:
    """The handlers of the service's subscriptions, by owner (also used without
    Kafka: `yigongti-events reapply`, a replay)."""
    return {
        sub.owner: SubscriptionConsumer(
            pool=pool, subscription=sub,
            topic=topic_name(f"{sub.owner}.events.v1", settings.topic_prefix),
            dlq_topic=topic_name(f"{spec.name}.dlq.v1", settings.topic_prefix),
            service=spec.name, source=f"/yigongti/{spec.name}",
            events_topic=f"{spec.name}.events.v1", aggregatetype=spec.aggregatetype,
            max_record_bytes=settings.max_record_bytes, on_ready=on_ready)
        for sub in spec.subscriptions
    }


def load_spec(service: str, spec_path: str | None = None) -> ServiceSpec:
    """The ServiceSpec of an installed service (entry point group
    "yigongti.services"), or of `module:function` (tests, a service in development)."""
    from importlib.metadata import entry_points

    if spec_path:
        module, _, function = spec_path.partition(":")
        return getattr(__import__(module, fromlist=[function]), function)()
    for entry in entry_points(group="yigongti.services"):
        if entry.name == service:
            return entry.load()()
    raise SystemExit(f"no service {service!r} installed (entry points yigongti.services)")


def run_service(spec_factory: Callable[[], ServiceSpec],
                argv: list[str] | None = None) -> None:
    """Console-script entry point of a service. It takes no arguments: settings
    come from environment variables (`--help` lists them and exits)."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Runs one yigongti service: its Kafka subscribers, outbox relay, timers "
        "and HTTP API, until SIGTERM. Configured by environment variables only:",
        epilog="\n".join(f"  {name.upper():28} {field.description or ''}"
                         for name, field in KitSettings.model_fields.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    spec = spec_factory()
    settings = KitSettings(service_name=spec.name)
    configure_logging(spec.name)
    with event_loop_runner() as runner:
        runner.run(ServiceRuntime(spec, settings).run_until_signalled())


def event_loop_runner() -> asyncio.Runner:
    """An asyncio runner on uvloop where it is installed (Linux, the images):
    its socket and timer handling in C is what asyncpg, aiokafka and uvicorn
    spend much of a service's CPU in."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)

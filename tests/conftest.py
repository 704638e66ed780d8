"""Shared fixtures: a real broker and a real database for the whole run, and
per-test isolation (schema, topic prefix, group ids). See harness.py for how
the infrastructure is chosen.

Session:  kafka_bootstrap, broker_kind, admin_database_url, database_url,
          dev_keys, run_dir, orthanc
Per test: schema, topic_prefix, topics, group_id, kit_env, kit_settings,
          service_process
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import harness
import pytest
import pytest_asyncio
from yigongti_deploy.devkeys import DevKeys, write_dev_keys
from yigongti_deploy.embedded import create_database, create_topics, drop_database, free_port
from yigongti_deploy.stack import ServiceProcess

# --- session: infrastructure ---------------------------------------------------


@pytest.fixture(scope="session")
def run_id() -> str:
    return harness.RUN_ID


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Logs of the broker and of service processes for this run."""
    return tmp_path_factory.mktemp(f"run{harness.RUN_ID}")


@pytest_asyncio.fixture(scope="session")
async def _kafka(run_dir: Path) -> AsyncIterator[harness.Running]:
    running = await harness.start_kafka(run_dir)
    harness.BROKER_KIND = running.kind
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(_kafka: harness.Running) -> str:
    """host:port of the broker every test shares."""
    return _kafka.address


@pytest.fixture(scope="session")
def broker_kind(_kafka: harness.Running) -> str:
    """ "embedded" (Tansu) or "kafka" (Apache Kafka)."""
    return _kafka.kind


@pytest_asyncio.fixture(scope="session")
async def _postgres() -> AsyncIterator[harness.Running]:
    running = await harness.start_postgres()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture(scope="session")
def admin_database_url(_postgres: harness.Running) -> str:
    """URL of the server's maintenance database (to create and drop databases)."""
    return _postgres.address


@pytest_asyncio.fixture(scope="session")
async def database_url(admin_database_url: str) -> AsyncIterator[str]:
    """A fresh database `ygt_test_<run id>` for this run, dropped at the end."""
    name = f"ygt_test_{harness.RUN_ID}"
    url = await create_database(admin_database_url, name)
    try:
        yield url
    finally:
        await drop_database(admin_database_url, name)


@pytest.fixture(scope="session")
def dev_keys(run_dir: Path) -> DevKeys:
    """Bearer-token key pair and a registered demo terminal (terminals.yaml)."""
    return write_dev_keys(run_dir / "keys")


@pytest_asyncio.fixture(scope="session")
async def orthanc(run_dir: Path) -> AsyncIterator[str]:
    """DICOMweb root URL of the PACS every test shares (a service's PACS_DICOMWEB_URL).
    Tests upload studies with fresh UIDs, so they never see each other's. Skipped
    when Orthanc is not installed, except under CI=true, where that fails."""
    running = await harness.start_orthanc(run_dir)
    if running is None:
        pytest.skip("Orthanc is not installed (`make setup` installs it on Debian as root)")
    try:
        yield running.address
    finally:
        await running.stop()


# --- per test: isolation ---------------------------------------------------------


@pytest_asyncio.fixture
async def schema(database_url: str) -> AsyncIterator[str]:
    """A fresh schema for this test; it and any `<schema>_*` schema are dropped after."""
    name = harness.unique("s")
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
    finally:
        await conn.close()
    yield name
    conn = await asyncpg.connect(database_url)
    try:
        leftovers = await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname = $1 OR nspname LIKE $2",
            name,
            name.replace("_", r"\_") + r"\_%",
        )
        for row in leftovers:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{row["nspname"]}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def topic_prefix() -> str:
    """`t<run id>_<n>_`: put before every topic name of this test (TOPIC_PREFIX)."""
    return harness.unique("t") + "_"


@pytest.fixture
def group_id() -> str:
    """A consumer group id nobody else uses."""
    return harness.unique("g")


@pytest.fixture
def topics(kafka_bootstrap: str, topic_prefix: str):
    """`await topics("lab")` creates the service's topics (intake, events, dlq)
    under this test's prefix; returns {registered name: physical name}."""
    from yigongti_contracts.topics import topic_name, topics_for

    async def create(*services: str) -> dict[str, str]:
        names: dict[str, str] = {}
        wanted = []
        for service in services:
            for topic in topics_for(service):
                names[topic.name] = topic_name(topic.name, topic_prefix)
                wanted.append((names[topic.name], topic.partitions))
        await create_topics(kafka_bootstrap, wanted)
        return names

    return create


class KitEnv:
    """Environment of a service under test, pointed at this test's schema,
    topic prefix and group; `kit_env("lab", HTTP_PORT="0")` -> dict of env vars,
    `kit_settings("lab")` -> KitSettings built from the same variables."""

    def __init__(self, base: Mapping[str, str]):
        self.base = dict(base)

    def env(self, service: str, **overrides: Any) -> dict[str, str]:
        env = dict(self.base)
        env.update(
            SERVICE_NAME=service,
            CONSUMER_GROUP=f"{self.base['CONSUMER_GROUP']}_{service}",
            HTTP_PORT=str(free_port()),
            METRICS_PORT="0",
        )
        env.update({k.upper(): str(v) for k, v in overrides.items()})
        return env

    def settings(self, service: str, **overrides: Any):
        from yigongti_kit.settings import KitSettings

        env = self.env(service, **overrides)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return KitSettings()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture
def _kit(
    database_url, schema, kafka_bootstrap, broker_kind, topic_prefix, group_id, dev_keys
) -> KitEnv:
    return KitEnv(
        {
            "DATABASE_URL": database_url,
            "DB_SCHEMA": schema,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_BROKER_KIND": broker_kind,
            "TOPIC_PREFIX": topic_prefix,
            "CONSUMER_GROUP": group_id,
            "HTTP_HOST": "127.0.0.1",
            "AUTH_PUBLIC_KEY": dev_keys.auth_public_pem,
            "TERMINALS_FILE": str(dev_keys.terminals_file),
        }
    )


@pytest.fixture
def kit_env(_kit: KitEnv):
    """`kit_env(service, **overrides) -> dict[str, str]` (env var names)."""
    return _kit.env


@pytest.fixture
def kit_settings(_kit: KitEnv):
    """`kit_settings(service, **overrides) -> KitSettings`; `.env(...)` gives the dict."""

    def build(service: str, **overrides: Any):
        return _kit.settings(service, **overrides)

    build.env = _kit.env
    return build


# --- per test: service subprocesses ------------------------------------------------


class TestService(ServiceProcess):
    """A service subprocess of one test; `fault_marker` exists once a fault point fired."""

    __test__ = False  # not a test class

    def __init__(
        self,
        name: str,
        env: Mapping[str, str],
        log_path: Path,
        fault_marker: Path,
        script: str | None = None,
    ):
        super().__init__(name, env, log_path, script=script)
        self.fault_marker = fault_marker
        self.fault_env: dict[str, str] = {}

    @property
    def faulted(self) -> bool:
        return self.fault_marker.exists()

    def set_fault(self, point: str | None, after: int = 1) -> None:
        """Arm (or, with None, disarm) a fault point for the next start."""
        self.fault_marker.unlink(missing_ok=True)
        self.fault_env = (
            {}
            if point is None
            else {
                "YGT_FAULT_POINT": point,
                "YGT_FAULT_MARKER": str(self.fault_marker),
                "YGT_FAULT_AFTER": str(after),
            }
        )

    async def start(
        self, extra_env=None, ready_timeout: float = 60.0, *, wait_ready: bool = True
    ) -> None:
        self.spawn({**self.fault_env, **(extra_env or {})})
        if wait_ready:
            await self.wait_ready(ready_timeout)

    async def restart(
        self,
        extra_env=None,
        ready_timeout: float = 60.0,
        *,
        wait_ready: bool = True,
        kill: bool = False,
    ) -> None:
        """Stop (SIGTERM, or SIGKILL with kill=True) and start again. The fault
        env is kept: a fired fault point's marker lets the new process pass."""
        await (self.kill() if kill else self.stop())
        await self.start(extra_env, ready_timeout, wait_ready=wait_ready)


@pytest_asyncio.fixture
async def service_process(kit_env, tmp_path: Path) -> AsyncIterator[Any]:
    """`await service_process("lab", env=None, fault_point=None, fault_after=1,
    wait_ready=True, ready_timeout=60, script=None) -> TestService`: the service's
    console script (or `script`, an absolute path) as a subprocess, env defaulting to
    `kit_env(service)`. Every process is stopped after the test."""
    started: list[TestService] = []

    async def start(
        service: str,
        env: Mapping[str, str] | None = None,
        *,
        fault_point: str | None = None,
        fault_after: int = 1,
        wait_ready: bool = True,
        ready_timeout: float = 60.0,
        script: str | None = None,
    ) -> TestService:
        index = len(started) + 1
        proc = TestService(
            service,
            env if env is not None else kit_env(service),
            tmp_path / f"{service}-{index}.log",
            tmp_path / f"{service}-{index}.fault",
            script=script,
        )
        proc.set_fault(fault_point, fault_after)
        started.append(proc)
        await proc.start(ready_timeout=ready_timeout, wait_ready=wait_ready)
        return proc

    yield start
    for proc in started:
        await proc.stop(timeout_s=5)


# --- the test budget: time per suite (tests/<kind>/<suite>), printed at the end ------

_SUITE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    parts = report.nodeid.split("::", 1)[0].split("/")
    suite = "/".join(parts[1:3]) if len(parts) > 3 else "/".join(parts[1:-1]) or parts[0]
    _SUITE_SECONDS[suite] = _SUITE_SECONDS.get(suite, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if not _SUITE_SECONDS:
        return
    terminalreporter.section("time per suite (set-up, call and tear-down)")
    for suite, seconds in sorted(_SUITE_SECONDS.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{seconds:8.1f} s  {suite}")
    terminalreporter.write_line(f"{sum(_SUITE_SECONDS.values()):8.1f} s  in all")

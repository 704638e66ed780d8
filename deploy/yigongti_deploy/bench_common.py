"""What the benchmarks share: where the stack under test is, Kafka client
settings for it, and percentiles."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yigongti_kit.settings import KitSettings, kafka_client_kwargs

from .devkeys import DevKeys


@dataclass(frozen=True)
class BenchTarget:
    """The broker, database and lab service a benchmark runs against: a `Stack`
    (`from_stack`) or the test fixtures (the smoke test builds one)."""

    bootstrap: str
    broker_kind: str
    database_url: str
    keys: DevKeys
    lab_url: str
    topic: Callable[[str], str]  # registered topic name -> physical name
    topic_prefix: str = ""
    lab_pid: int | None = None  # for py-spy and the CPU meter
    broker_pid: int | None = None  # for the CPU meter
    database_name: str | None = None  # for the CPU meter (PostgreSQL backends)
    lab_schema: str = "lab"  # the lab's DB_SCHEMA (its terminal registry)

    @classmethod
    def from_stack(cls, stack: Any) -> BenchTarget:
        assert stack.bootstrap and stack.database_url and stack.keys
        lab = stack.services["lab"]
        return cls(
            bootstrap=stack.bootstrap,
            broker_kind=stack.broker_kind or "embedded",
            database_url=stack.database_url,
            keys=stack.keys,
            lab_url=lab.url,
            topic=stack.topic,
            topic_prefix=stack.topic_prefix,
            lab_pid=lab.pid,
            broker_pid=stack._broker.pid if getattr(stack, "_broker", None) else None,
            database_name=stack.database_name,
        )

    def settings(self, name: str = "bench") -> KitSettings:
        return KitSettings(
            service_name=name,
            kafka_bootstrap_servers=self.bootstrap,
            kafka_broker_kind=self.broker_kind,
        )

    def kafka_kwargs(self, role: str, name: str = "bench") -> dict[str, Any]:
        return kafka_client_kwargs(self.settings(name), role)

    def admin_kwargs(self) -> dict[str, Any]:
        """For `embedded.create_topics(..., client_kwargs=)`: security settings only."""
        kwargs = self.kafka_kwargs("admin")
        for key in ("bootstrap_servers", "request_timeout_ms", "client_id", "retry_backoff_ms"):
            kwargs.pop(key, None)
        return kwargs


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values; nan if none."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float | int]:
    """count, p50, p95, p99 and max of latencies given in seconds, in milliseconds."""
    values = sorted(seconds)
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 50) * 1000, 2),
        "p95_ms": round(percentile(values, 95) * 1000, 2),
        "p99_ms": round(percentile(values, 99) * 1000, 2),
        "max_ms": round(values[-1] * 1000, 2) if values else math.nan,
    }


# --- a bench on a stack of its own -------------------------------------------------


async def on_own_stack(run_dir: Path, name: str, services: list[str],
                       measure: Callable[[Any], Awaitable[dict[str, Any]]]
                       ) -> tuple[dict[str, Any], str]:
    """Start an embedded Stack of `services` for the bench `name` (its logs
    under run_dir), run `measure(stack)`, stop it; (figures, time stamp)."""
    from .stack import Stack

    stamp = time.strftime("%Y%m%d-%H%M%S")
    stack = Stack(run_dir / f"bench-{name}-stack-{stamp}", services=services)
    print(f"starting the embedded stack ({', '.join(services)}) …", flush=True)
    await stack.start()
    try:
        return await measure(stack), stamp
    finally:
        await stack.stop()


def write_figures(run_dir: Path, name: str, stamp: str, figures: dict[str, Any]) -> Path:
    path = run_dir / f"bench-{name}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures: {path}")
    return path


# --- who used the CPU ---------------------------------------------------------------


@dataclass
class CpuMeter:
    """CPU time per part of the system between `start()` and `stop()`, from /proc
    (Linux): this benchmark's process and its children, the lab, the broker,
    PostgreSQL backends of the bench's database, PostgreSQL's own processes and
    backends of other databases, and everything else. The machine may be shared
    (other test runs): "other" says how much. Empty where /proc is missing."""

    target: BenchTarget
    named: dict[int, str] = field(default_factory=dict)  # other services' pids, by name
    _start: dict[int, tuple[str, float]] = field(default_factory=dict)
    _wall: float = 0.0
    _machine: tuple[int, int, int] = (0, 0, 0)

    def start(self) -> CpuMeter:
        self._start = _processes()
        self._wall = time.monotonic()
        self._machine = _machine_ticks()
        return self

    def stop(self) -> dict[str, float]:
        """Percent of one core per part over the interval, and `machine_busy_pct`
        (of all cores)."""
        end = _processes()
        wall = time.monotonic() - self._wall
        if not end or wall <= 0:
            return {}
        parts: dict[str, float] = {}
        for pid, (cmdline, cpu) in end.items():
            used = cpu - self._start.get(pid, (cmdline, 0.0))[1]
            part = self._classify(pid, cmdline)
            parts[part] = parts.get(part, 0.0) + used
        total, idle, steal = _machine_ticks()
        spent = max(1, total - self._machine[0])
        busy = 1 - (idle - self._machine[1]) / spent
        figures = {k: round(100 * v / wall, 1) for k, v in sorted(parts.items())}
        figures["machine_busy_pct"] = round(100 * busy, 1)
        # a virtual machine's CPU taken by its host: runs with much of it are slower
        figures["machine_steal_pct"] = round(100 * (steal - self._machine[2]) / spent, 1)
        return figures

    def _classify(self, pid: int, cmdline: str) -> str:
        if pid in self.named:
            return self.named[pid]
        if pid == self.target.lab_pid:
            return "lab"
        if pid == self.target.broker_pid:
            return "broker"
        if pid == os.getpid() or _is_descendant(pid, os.getpid()):
            return "bench"
        if cmdline.startswith("postgres"):
            if self.target.database_name and f" {self.target.database_name} " in cmdline:
                return "postgres"
            return "postgres_shared_and_other_dbs"
        return "other"


def _processes() -> dict[int, tuple[str, float]]:
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    found: dict[int, tuple[str, float]] = {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue
        found[pid] = (cmdline, (int(fields[11]) + int(fields[12])) / ticks)
    return found


def _is_descendant(pid: int, ancestor: int) -> bool:
    for _ in range(20):
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
    return False


def _machine_ticks() -> tuple[int, int, int]:
    """All CPU ticks, the idle ones (idle, iowait) and the stolen ones."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0, 0, 0
    # user nice system idle iowait irq softirq steal guest guest_nice: guest
    # time is already in user, so the sum counts it twice
    return sum(values[:8]), values[3] + values[4], values[7] if len(values) > 7 else 0

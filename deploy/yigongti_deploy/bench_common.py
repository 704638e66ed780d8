"""What the benchmarks share: where the stack under test is, Kafka client
settings for it, and percentiles."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    lab_pid: int | None = None  # for py-spy

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

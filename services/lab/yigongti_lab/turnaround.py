"""Turnaround-time targets by discipline and priority (data in
policy/turnaround.yaml), measured from receipt at the lab centre to the
verified report, and the national benchmarks to compare the metrics with.

Pure functions: the packaged YAML is read once (cached), nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from importlib.resources import files
from typing import Any

import yaml
from yigongti_contracts.lab.codes import Priority

from .catalogue import Discipline


@dataclass(frozen=True)
class Benchmark:
    """National intra-lab TAT (median, 90th percentile)."""

    median: timedelta
    p90: timedelta


@dataclass(frozen=True)
class _Turnaround:
    interval: str
    targets: Mapping[tuple[Discipline, Priority], timedelta | None]
    benchmarks: Mapping[Discipline, Benchmark]
    pre_analytic: Benchmark


def _minutes(value: Any) -> timedelta | None:
    return None if value is None else timedelta(minutes=int(value))


@cache
def _turnaround() -> _Turnaround:
    raw: Any = yaml.safe_load(
        (files("yigongti_lab") / "policy" / "turnaround.yaml").read_text("utf-8"))
    targets: dict[tuple[Discipline, Priority], timedelta | None] = {}
    for row in raw["targets"]:
        key = (Discipline(row["discipline"]), Priority(row["priority"]))
        if key in targets:
            raise ValueError(f"turnaround target {key} given twice")
        targets[key] = _minutes(row["minutes"])
    bench = raw["benchmarks"]
    return _Turnaround(
        interval=raw["interval"],
        targets=targets,
        benchmarks={Discipline(b["discipline"]): Benchmark(timedelta(minutes=b["median_minutes"]),
                                                            timedelta(minutes=b["p90_minutes"]))
                    for b in bench["intra_lab"]},
        pre_analytic=Benchmark(timedelta(minutes=bench["pre_analytic"]["median_minutes"]),
                               timedelta(minutes=bench["pre_analytic"]["p90_minutes"])),
    )


def interval() -> str:
    """What a target measures: "receipt_to_verification"."""
    return _turnaround().interval


def target(discipline: Discipline, priority: Priority) -> timedelta | None:
    """The receipt-to-verification target; None where the discipline has no target
    in minutes (microbiology)."""
    return _turnaround().targets[(Discipline(discipline), Priority(priority))]


def benchmark(discipline: Discipline) -> Benchmark | None:
    """The national intra-lab benchmark of a discipline, if one is published."""
    return _turnaround().benchmarks.get(Discipline(discipline))


def pre_analytic_benchmark() -> Benchmark:
    """The national pre-analytic TAT benchmark (median 15, P90 20 minutes)."""
    return _turnaround().pre_analytic

"""Turnaround time (TAT) of verified results through OpenTelemetry: collection →
receipt (pre-analytic), receipt → verification (in-lab) and collection →
verification, by priority and discipline, against the targets in
policy/turnaround.yaml (over-target verifications are counted as SLA breaches)."""

from __future__ import annotations

from functools import cache

from opentelemetry import metrics
from yigongti_contracts.lab.codes import Priority

from . import catalogue, turnaround


@cache
def _instruments():
    meter = metrics.get_meter("yigongti.lab")
    return (
        meter.create_histogram("lab.turnaround", unit="min",
                               description="Specimen turnaround by stage, priority, discipline"),
        meter.create_counter("lab.turnaround.breaches",
                             description="Verified results over their in-lab TAT target"),
    )


def record_verified(priority: str, results) -> None:
    """Turnaround of results verified now: rows with test_code, collected_at,
    received_at (their tube's) and verified_at; one sample per test and tube."""
    rows = {(r["test_code"], r["collected_at"], r["received_at"], r["verified_at"]): r
            for r in results}.values()
    histogram, breaches = _instruments()
    for row in rows:
        discipline = catalogue.lookup(row["test_code"]).discipline
        attrs = {"priority": priority, "discipline": discipline.value}
        stages = {
            "pre_analytic": (row["collected_at"], row["received_at"]),
            "in_lab": (row["received_at"], row["verified_at"]),
            "total": (row["collected_at"], row["verified_at"]),
        }
        for stage, (start, end) in stages.items():
            if start is not None and end is not None:
                histogram.record((end - start).total_seconds() / 60, {**attrs, "stage": stage})
        target = turnaround.target(discipline, Priority(priority))
        if target is not None and row["received_at"] is not None \
                and row["verified_at"] - row["received_at"] > target:
            breaches.add(1, attrs)

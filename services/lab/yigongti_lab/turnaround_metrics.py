"""Turnaround time (TAT) of verified results through OpenTelemetry: collection →
receipt (pre-analytic), receipt → verification (in-lab) and collection →
verification, by priority and discipline, against the targets in
policy/turnaround.yaml (over-target verifications are counted as SLA breaches)."""

from __future__ import annotations

from functools import cache

import asyncpg
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


async def record_verified(conn: asyncpg.Connection, order_id: str, priority: str,
                          observation_ids: list[str]) -> None:
    rows = await conn.fetch(
        """SELECT DISTINCT r.test_code, s.collected_at, s.received_at, r.verified_at
           FROM results r JOIN specimens s USING (barcode)
           WHERE r.observation_id = ANY($1::text[])""",
        observation_ids,
    )
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

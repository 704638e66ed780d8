"""Turnaround per stage, per reading centre (DESIGN §5), from the service's own
timestamps: requested → queued → claimed → reported → acknowledged, and the
chest-pain centre measures (domain-rules.md §4):

- first medical contact → first ECG: `first_medical_contact_at` of the request
  to the recording's arrival at the county (its upload; the cart's own
  acquisition time is not trusted for this: carts' clocks drift and files from
  other sites carry any date), target < 10 min;
- first ECG → diagnosis: the upload to the signed report, target < 10 min.

Figures in seconds: count, median, 90th percentile, and the share within the
target where there is one."""

from __future__ import annotations

from functools import cache

import asyncpg
from opentelemetry import metrics

TARGET_S = {"first_contact_to_ecg": 600, "ecg_to_diagnosis": 600}
TARGET_SOURCE = "domain-rules.md §4: chest-pain centre, FMC to first ECG ≤ 10 min; first " \
                "ECG to diagnosis ≤ 10 min [OFFICIAL]"

_STAGES = """
WITH r AS (
  SELECT q.*, rec.uploaded_at AS ecg_at,
         (SELECT min(f.acknowledged_at) FROM critical_findings f
           WHERE f.request_id = q.request_id) AS acknowledged_at
    FROM requests q LEFT JOIN recordings rec USING (recording_ref)
   WHERE q.reading_centre = $1 AND q.queued_at >= db_now() - make_interval(days => $2)
), s AS (
  SELECT 'requested_to_queued' AS stage, extract(epoch FROM queued_at - requested_at) AS s FROM r
  UNION ALL SELECT 'queued_to_claimed', extract(epoch FROM claimed_at - queued_at) FROM r
  UNION ALL SELECT 'claimed_to_reported', extract(epoch FROM reported_at - claimed_at) FROM r
  UNION ALL SELECT 'reported_to_acknowledged', extract(epoch FROM acknowledged_at - reported_at)
    FROM r
  UNION ALL SELECT 'first_contact_to_ecg', extract(epoch FROM ecg_at - first_contact_at) FROM r
  UNION ALL SELECT 'ecg_to_diagnosis', extract(epoch FROM reported_at - ecg_at) FROM r
)
SELECT stage, count(*) AS n,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY s) AS p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY s) AS p90,
       avg(CASE WHEN s <= 600 THEN 1.0 ELSE 0.0 END) AS within_10_min
  FROM s WHERE s IS NOT NULL GROUP BY stage"""

STAGES = ("requested_to_queued", "queued_to_claimed", "claimed_to_reported",
          "reported_to_acknowledged", "first_contact_to_ecg", "ecg_to_diagnosis")


async def per_centre(conn: asyncpg.Connection, centre: str, days: int) -> dict:
    rows = {r["stage"]: r for r in await conn.fetch(_STAGES, centre, days)}
    out = {}
    for stage in STAGES:
        row = rows.get(stage)
        figures = {"count": row["n"] if row else 0,
                   "p50_s": round(row["p50"], 1) if row else None,
                   "p90_s": round(row["p90"], 1) if row else None}
        if stage in TARGET_S:
            figures["target_s"] = TARGET_S[stage]
            figures["within_target"] = round(float(row["within_10_min"]), 3) if row else None
        out[stage] = figures
    return {"reading_centre": centre, "days": days, "stages": out, "source": TARGET_SOURCE}


@cache
def _histogram():
    # Prometheus: diagnosis_turnaround_seconds_* by stage, centre, modality, priority.
    return metrics.get_meter("yigongti.diagnosis").create_histogram(
        "diagnosis.turnaround", unit="s",
        description="Diagnosis turnaround by stage (requested_to_queued, queued_to_claimed, "
                    "claimed_to_reported, reported_to_acknowledged, first_contact_to_ecg, "
                    "ecg_to_diagnosis), reading centre, modality and priority")


def record(stage: str, start, end, row) -> None:
    """One sample of `stage` for the request `row` (nothing when a time is missing).
    Recorded in the transaction's code path: a rolled-back one may still count."""
    if start is None or end is None:
        return
    _histogram().record((end - start).total_seconds(), {
        "stage": stage, "reading_centre": row["reading_centre"], "modality": row["modality"],
        "priority": row["priority"]})

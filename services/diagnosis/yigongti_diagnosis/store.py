"""SQL of requests and recordings that several modules share."""

from __future__ import annotations

import hashlib
import json
import secrets

import asyncpg
from yigongti_contracts.common import Age


def age_of(row: asyncpg.Record) -> Age:
    raw = row["age"]
    return Age.model_validate(json.loads(raw) if isinstance(raw, str) else raw)


def new_ref(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


async def store_recording(conn: asyncpg.Connection, *, institution: str, user: str,
                          data: bytes, metadata: dict, duration_s: float,
                          measurements: dict | None, measure_error: str | None) -> str:
    ref = new_ref("REC")
    await conn.execute(
        """INSERT INTO recordings (recording_ref, institution_id, data, size_bytes, source,
                                   sample_rate_hz, duration_s, acquired_at, label,
                                   measurements, measure_error, uploaded_by, sha256)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::timestamptz, $9, $10::jsonb, $11, $12,
                   $13)""",
        ref, institution, data, len(data), metadata["source"], metadata["sample_rate_hz"],
        duration_s, metadata["acquired_at"], metadata["label"],
        json.dumps(measurements) if measurements is not None else None, measure_error, user,
        digest(data))
    return ref


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def measured_before(conn: asyncpg.Connection, data: bytes) -> dict | None:
    """The measurements of an identical recording measured before, if any."""
    raw = await conn.fetchval(
        "SELECT measurements FROM recordings WHERE sha256 = $1 AND measurements IS NOT NULL "
        "LIMIT 1", digest(data))
    return json.loads(raw) if raw is not None else None


WORKLIST = """
    SELECT request_id, modality, priority, priority_reasons, due_at, status, claimed_by,
           lease_until, requesting_institution, patient_ref, sex, age, indications, queued_at
      FROM requests
     WHERE reading_centre = $1 AND status IN ('queued', 'claimed')
     ORDER BY priority_rank, due_at, request_id
     LIMIT $2"""


def item(row: asyncpg.Record) -> dict:
    out = dict(row)
    for key, value in out.items():
        if hasattr(value, "isoformat"):
            out[key] = value.isoformat()
    if "age" in out and isinstance(out["age"], str):
        out["age"] = json.loads(out["age"])
    for key in ("priority_reasons", "indications", "conclusions"):
        if key in out and out[key] is not None:
            out[key] = list(out[key])
    return out

"""Claims on the reading centre's worklist: a 15-minute lease (policy/triage.yaml)
on a durable timer; an expired lease returns the study to the queue. A study
still unread at its due time raises DiagnosisOverdue. Locks: locking.py."""

from __future__ import annotations

import asyncpg
from yigongti_contracts.diagnosis.codes import ReleaseReason
from yigongti_contracts.diagnosis.v1 import DiagnosisClaimed, DiagnosisOverdue, DiagnosisReleased
from yigongti_kit import timers

from . import critical, locking, triage, turnaround
from .events import emit

LEASE_TIMER = "claim_lease"
OVERDUE_TIMER = "diagnosis_overdue"


class ClaimConflict(Exception):
    """The study is not queued (claimed by someone, reported or withdrawn): 409."""


async def _claim(conn: asyncpg.Connection, row: asyncpg.Record, reader: str) -> dict:
    now = await timers.db_now(conn)
    until = now + triage.lease()
    await conn.execute(
        """UPDATE requests SET status = 'claimed', claimed_by = $2, claimed_at = $3,
                  lease_until = $4 WHERE request_id = $1""",
        row["request_id"], reader, now, until)
    await timers.schedule(conn, LEASE_TIMER, row["request_id"], at=until)
    turnaround.record("queued_to_claimed", row["queued_at"], now, row)
    await emit(conn, DiagnosisClaimed(
        request_id=row["request_id"], reading_centre=row["reading_centre"], reader=reader,
        lease_until=until, claimed_at=now))
    return {"request_id": row["request_id"], "modality": row["modality"],
            "priority": row["priority"], "due_at": row["due_at"].isoformat(),
            "lease_until": until.isoformat(), "recording_ref": row["recording_ref"],
            "study_instance_uid": row["study_instance_uid"]}


async def claim_next(conn: asyncpg.Connection, centre: str, modalities: list[str],
                     reader: str) -> dict | None:
    """The first queued study of the centre's worklist, claimed; None when empty."""
    row = await locking.lock_next_queued(conn, centre, modalities)
    return None if row is None else await _claim(conn, row, reader)


async def claim(conn: asyncpg.Connection, row: asyncpg.Record, reader: str) -> dict:
    """Claim a chosen study (its row locked by the caller)."""
    if row["status"] != "queued":
        raise ClaimConflict("the study is not on the worklist (claimed, reported or withdrawn)")
    return await _claim(conn, row, reader)


async def release(conn: asyncpg.Connection, row: asyncpg.Record, reader: str,
                  reason: ReleaseReason = ReleaseReason.released) -> dict:
    if row["status"] != "claimed" or row["claimed_by"] != reader:
        raise ClaimConflict("the study is not claimed by the caller")
    now = await timers.db_now(conn)
    await _back_to_queue(conn, row, reason, now)
    await timers.cancel(conn, LEASE_TIMER, row["request_id"])
    return {"request_id": row["request_id"], "status": "queued"}


async def _back_to_queue(conn, row, reason: ReleaseReason, now) -> None:
    await conn.execute(
        """UPDATE requests SET status = 'queued', claimed_by = NULL, claimed_at = NULL,
                  lease_until = NULL WHERE request_id = $1""", row["request_id"])
    await emit(conn, DiagnosisReleased(
        request_id=row["request_id"], reading_centre=row["reading_centre"],
        reader=row["claimed_by"], reason=reason, released_at=now))


async def on_lease_expiry(conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
    row = await locking.lock_request(conn, timer["key"])
    now = await timers.db_now(conn)
    if row is None or row["status"] != "claimed" or row["lease_until"] > now:
        return
    await _back_to_queue(conn, row, ReleaseReason.lease_expired, now)


async def on_overdue(conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
    row = await locking.lock_request(conn, timer["key"])
    if row is None or row["status"] not in ("queued", "claimed"):
        return
    await emit(conn, DiagnosisOverdue(
        request_id=row["request_id"], reading_centre=row["reading_centre"],
        priority=row["priority"], due_at=row["due_at"],
        supervisor=critical.supervisor(row["reading_centre"]),
        overdue_at=await timers.db_now(conn)))

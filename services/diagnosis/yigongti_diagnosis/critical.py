"""Critical findings (危急值, DESIGN §5): raised when a report is signed with the
critical flag; only an acknowledgement from the requesting institution with the
read-back confirmed stops the clock. Otherwise a ladder of calls runs
(policy/critical.yaml): the requesting clinic, its on-call backup, the
centre's supervisor, then the supervisor again every `repeat_minutes`, each
step on its own durable timer. Every acknowledgement attempt and every call is
recorded with its read-back status."""

from __future__ import annotations

from datetime import timedelta
from functools import cache
from importlib.resources import files

import asyncpg
import yaml
from yigongti_contracts.diagnosis.codes import AckChannel
from yigongti_contracts.diagnosis.v1 import (
    CriticalFindingAck,
    CriticalFindingAcknowledged,
    CriticalFindingEscalated,
    CriticalFindingRaised,
)
from yigongti_kit import timers
from yigongti_kit.consumer import Rejection

from . import locking, turnaround
from .events import emit
from .origin import Origin
from .store import age_of

ESCALATION_TIMER = "critical_escalation"


class CriticalConflict(Exception):
    """No open critical finding on the request (HTTP 409)."""


@cache
def policy() -> dict:
    return yaml.safe_load((files("yigongti_diagnosis") / "policy" / "critical.yaml")
                          .read_text("utf-8"))


def ack_within() -> timedelta:
    return timedelta(minutes=policy()["ack_minutes"])


def step(n: int) -> tuple[str, timedelta]:
    """Who is called at escalation step n (1, 2…) and how long until the next."""
    ladder = policy()["ladder"]
    who = ladder[min(n, len(ladder)) - 1]
    minutes = policy()["step_minutes"] if n < len(ladder) else policy()["repeat_minutes"]
    return who, timedelta(minutes=minutes)


def supervisor(centre: str) -> str:
    table = policy()["supervisors"]
    return table.get(centre, table["default"])


async def raise_finding(conn: asyncpg.Connection, request: asyncpg.Record, report_id: str,
                        conclusion: str, raised_at) -> str:
    finding_id = f"CF-{request['request_id']}"[:64]
    acknowledge_by = raised_at + ack_within()
    await conn.execute(
        """INSERT INTO critical_findings (finding_id, request_id, report_id, conclusion,
                                          raised_at, acknowledge_by)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (finding_id) DO NOTHING""",
        finding_id, request["request_id"], report_id, conclusion, raised_at, acknowledge_by)
    await timers.schedule(conn, ESCALATION_TIMER, finding_id, at=acknowledge_by)
    await emit(conn, CriticalFindingRaised(
        finding_id=finding_id, request_id=request["request_id"], report_id=report_id,
        patient_ref=request["patient_ref"], sex=request["sex"], age=age_of(request),
        requesting_institution=request["requesting_institution"],
        reading_centre=request["reading_centre"], modality=request["modality"],
        conclusion=conclusion, raised_at=raised_at, acknowledge_by=acknowledge_by))
    return finding_id


async def apply_ack(conn: asyncpg.Connection, ack: CriticalFindingAck, origin: Origin) -> None:
    request = await locking.lock_request(conn, ack.request_id)
    if request is None:
        raise Rejection("unknown_request", [("request_id", "unknown")])
    if origin.sender_institution not in (None, request["requesting_institution"]):
        raise Rejection("forbidden_institution", [("request_id", "forbidden_institution")])
    finding = await conn.fetchrow(
        "SELECT * FROM critical_findings WHERE finding_id = $1 AND request_id = $2",
        ack.finding_id, ack.request_id)
    if finding is None:
        raise Rejection("unknown_finding", [("finding_id", "unknown")])
    await conn.execute(
        """INSERT INTO critical_calls (finding_id, kind, reached, read_back, at)
           VALUES ($1, 'terminal_ack', $2, $3, $4)""",
        ack.finding_id, ack.acknowledged_by, ack.read_back_confirmed, ack.acknowledged_at)
    # Without a confirmed read-back the clock keeps running (recorded above).
    if finding["acknowledged_at"] is not None or not ack.read_back_confirmed:
        return
    await conn.execute(
        """UPDATE critical_findings SET acknowledged_at = $2, acknowledged_by = $3,
                  channel = $4 WHERE finding_id = $1""",
        ack.finding_id, ack.acknowledged_at, ack.acknowledged_by, ack.channel.value)
    await timers.cancel(conn, ESCALATION_TIMER, ack.finding_id)
    turnaround.record("reported_to_acknowledged", finding["raised_at"], ack.acknowledged_at,
                      request)
    await emit(conn, CriticalFindingAcknowledged(
        finding_id=ack.finding_id, request_id=ack.request_id,
        requesting_institution=request["requesting_institution"],
        acknowledged_by=ack.acknowledged_by, channel=ack.channel,
        acknowledged_at=ack.acknowledged_at))


async def call_back(conn: asyncpg.Connection, request: asyncpg.Record, *, called_by: str,
                    reached: str | None, read_back: bool) -> dict:
    """A reader's phone call to the clinic (HTTP; the request row is locked)."""
    finding = await conn.fetchrow(
        "SELECT * FROM critical_findings WHERE request_id = $1", request["request_id"])
    if finding is None or finding["acknowledged_at"] is not None:
        raise CriticalConflict("no unacknowledged critical finding on this request")
    if read_back and reached is None:
        raise CriticalConflict("a read-back needs who answered (reached)")
    now = await timers.db_now(conn)
    await conn.execute(
        """INSERT INTO critical_calls (finding_id, kind, called_by, reached, read_back, at)
           VALUES ($1, 'call_back', $2, $3, $4, $5)""",
        finding["finding_id"], called_by, reached, read_back, now)
    if read_back:
        await conn.execute(
            """UPDATE critical_findings SET acknowledged_at = $2, acknowledged_by = $3,
                      channel = 'phone' WHERE finding_id = $1""",
            finding["finding_id"], now, reached)
        await timers.cancel(conn, ESCALATION_TIMER, finding["finding_id"])
        turnaround.record("reported_to_acknowledged", finding["raised_at"], now, request)
        await emit(conn, CriticalFindingAcknowledged(
            finding_id=finding["finding_id"], request_id=request["request_id"],
            requesting_institution=request["requesting_institution"], acknowledged_by=reached,
            channel=AckChannel.phone, acknowledged_at=now))
    return {"finding_id": finding["finding_id"], "acknowledged": read_back,
            "called_by": called_by}


async def on_escalation(conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
    """Not acknowledged in time: the next step of the ladder is called."""
    request_id = await conn.fetchval(
        "SELECT request_id FROM critical_findings WHERE finding_id = $1", timer["key"])
    if request_id is None:
        return
    await locking.lock_request(conn, request_id)
    finding = await conn.fetchrow("SELECT * FROM critical_findings WHERE finding_id = $1",
                                  timer["key"])
    if finding["acknowledged_at"] is not None:
        return
    n = finding["step"] + 1
    who, wait = step(n)
    now = await timers.db_now(conn)
    await conn.execute("UPDATE critical_findings SET step = $2 WHERE finding_id = $1",
                       finding["finding_id"], n)
    await conn.execute(
        """INSERT INTO critical_calls (finding_id, kind, reached, read_back, at)
           VALUES ($1, 'escalation', $2, false, $3)""", finding["finding_id"], who, now)
    await timers.schedule(conn, ESCALATION_TIMER, finding["finding_id"], at=now + wait)
    await emit(conn, CriticalFindingEscalated(
        finding_id=finding["finding_id"], request_id=request_id, step=n, escalated_to=who,
        escalated_at=now, next_escalation_at=now + wait))

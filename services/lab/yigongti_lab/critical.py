"""Critical values (危急值, DESIGN §5): raised once a technologist confirms the
result; only an acknowledgement from the ordering institution with the read-back
confirmed stops the clock; otherwise, every escalation interval (data) the next
person on the lab centre's on-duty roster is called, until someone acknowledges.
Every call-back is recorded (who, when, and how it went)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import cache

import asyncpg
from opentelemetry import metrics
from yigongti_contracts.lab.codes import AckChannel, CallBackOutcome, CriticalDirection
from yigongti_contracts.lab.v1 import (
    CriticalValueAck,
    CriticalValueAcknowledged,
    CriticalValueCallBackRecorded,
    CriticalValueEscalated,
    CriticalValueRaised,
)
from yigongti_kit import timers
from yigongti_kit.consumer import Rejection

from . import locking, roster
from .events import emit
from .parking import Origin

ESCALATION_TIMER = "critical_escalation"


@cache
def _escalations():
    # Prometheus: lab_critical_escalations_total; an alert fires on any increase.
    return metrics.get_meter("yigongti.lab").create_counter(
        "lab.critical.escalations", unit="{escalation}",
        description="Critical values still unacknowledged when their escalation interval "
                    "ended (the next person on the roster is called), by level")


class CriticalConflict(Exception):
    """The critical value is already acknowledged (HTTP 409)."""


async def raise_critical(conn: asyncpg.Connection, result: asyncpg.Record,
                         direction: CriticalDirection, confirmed_by: str) -> str:
    order = await conn.fetchrow("SELECT * FROM orders WHERE order_id = $1", result["order_id"])
    critical_id = f"CV-{result['observation_id']}"[:64]
    raised_at = await timers.db_now(conn)
    escalate_at = raised_at + roster.escalation_interval()
    await conn.execute(
        """INSERT INTO critical_values (critical_id, order_id, observation_id, raised_at)
           VALUES ($1, $2, $3, $4)""",
        critical_id, result["order_id"], result["observation_id"], raised_at,
    )
    await timers.schedule(conn, ESCALATION_TIMER, critical_id, at=escalate_at)
    await emit(conn, CriticalValueRaised(
        order_id=result["order_id"], critical_id=critical_id, patient_ref=order["patient_ref"],
        ordering_institution=order["ordering_institution"], lab_centre=order["lab_centre"],
        barcode=result["barcode"], observation_id=result["observation_id"],
        test_code=result["code"],
        value=Decimal(result["value"]) if result["value"] is not None else None,
        comparator=result["comparator"], coded_value=result["coded_value"],
        unit=result["unit"], direction=direction, confirmed_by=confirmed_by,
        raised_at=raised_at, escalate_at=escalate_at,
    ))
    return critical_id


async def _acknowledge(conn: asyncpg.Connection, row: asyncpg.Record, *, by: str,
                       channel: AckChannel, at: datetime) -> None:
    await conn.execute(
        """UPDATE critical_values SET acknowledged_at = $2, acknowledged_by = $3, channel = $4
           WHERE critical_id = $1""",
        row["critical_id"], at, by, channel.value,
    )
    await timers.cancel(conn, ESCALATION_TIMER, row["critical_id"])
    order = await conn.fetchrow("SELECT ordering_institution FROM orders WHERE order_id = $1",
                                row["order_id"])
    await emit(conn, CriticalValueAcknowledged(
        order_id=row["order_id"], critical_id=row["critical_id"],
        ordering_institution=order["ordering_institution"], acknowledged_by=by,
        channel=channel, escalation_level=row["level"], acknowledged_at=at,
    ))


async def _open(conn: asyncpg.Connection, critical_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM critical_values WHERE critical_id = $1 FOR UPDATE", critical_id)


async def apply_ack(conn: asyncpg.Connection, ack: CriticalValueAck, origin: Origin) -> None:
    """The clinic's acknowledgement on intake: only with the read-back confirmed,
    and only from the ordering institution, does it stop the clock."""
    await locking.lock_critical(conn, ack.critical_id)
    row = await _open(conn, ack.critical_id)
    if row is None or row["order_id"] != ack.order_id:
        raise Rejection("unknown_critical_value", [("critical_id", "unknown")])
    order = await conn.fetchrow("SELECT ordering_institution FROM orders WHERE order_id = $1",
                                row["order_id"])
    if origin.sender_institution not in (None, order["ordering_institution"]):
        raise Rejection("forbidden_institution", [("order_id", "forbidden_institution")])
    outcome = (CallBackOutcome.confirmed_read_back if ack.read_back_confirmed
               else CallBackOutcome.reached_no_read_back)
    await conn.execute(
        """INSERT INTO critical_calls (critical_id, kind, reached, outcome, at)
           VALUES ($1, 'terminal_ack', $2, $3, $4)""",
        row["critical_id"], ack.received_by, outcome.value, ack.acknowledged_at,
    )
    if row["acknowledged_at"] is None and ack.read_back_confirmed:
        await _acknowledge(conn, row, by=ack.received_by, channel=AckChannel.terminal,
                           at=ack.acknowledged_at)


async def record_call_back(conn: asyncpg.Connection, critical_id: str, *, called_by: str,
                           reached: str | None, outcome: CallBackOutcome) -> dict:
    """A lab phone call to the clinic (HTTP, by lab staff)."""
    await locking.lock_critical(conn, critical_id)
    row = await _open(conn, critical_id)
    if row is None:
        raise LookupError(critical_id)
    if row["acknowledged_at"] is not None:
        raise CriticalConflict("critical value already acknowledged")
    called_at = await timers.db_now(conn)
    event = CriticalValueCallBackRecorded(
        order_id=row["order_id"], critical_id=critical_id, called_by=called_by,
        reached=reached, outcome=outcome, called_at=called_at,
    )  # validates reached ⇔ answered before anything is stored
    await conn.execute(
        """INSERT INTO critical_calls (critical_id, kind, called_by, reached, outcome, at)
           VALUES ($1, 'call_back', $2, $3, $4, $5)""",
        critical_id, called_by, reached, outcome.value, called_at,
    )
    await emit(conn, event)
    if outcome is CallBackOutcome.confirmed_read_back:
        await _acknowledge(conn, row, by=reached, channel=AckChannel.call_back, at=called_at)
    return {"critical_id": critical_id, "outcome": outcome.value,
            "acknowledged": outcome is CallBackOutcome.confirmed_read_back}


async def on_escalation(conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
    """Not acknowledged in time: call the next person on the roster, and again
    after the interval, until someone acknowledges."""
    await locking.lock_critical(conn, timer["key"])
    row = await _open(conn, timer["key"])
    if row is None or row["acknowledged_at"] is not None:
        return
    order = await conn.fetchrow("SELECT lab_centre FROM orders WHERE order_id = $1",
                                row["order_id"])
    level = row["level"] + 1
    who = roster.who_next(order["lab_centre"], level)
    now = await timers.db_now(conn)
    next_at = now + roster.escalation_interval()
    await conn.execute("UPDATE critical_values SET level = $2 WHERE critical_id = $1",
                       row["critical_id"], level)
    await timers.schedule(conn, ESCALATION_TIMER, row["critical_id"], at=next_at)
    await emit(conn, CriticalValueEscalated(
        order_id=row["order_id"], critical_id=row["critical_id"], level=level,
        escalated_to=who.staff_id, escalated_at=now, next_escalation_at=next_at,
    ))
    _escalations().add(1, {"level": level})

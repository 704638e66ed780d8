"""Records that arrive before what they depend on (DESIGN §5): parked, applied
when the prerequisite arrives, refused with IntakeRejected only after a grace
period (policy/parking.yaml). An expired record is kept, never discarded.

A record refused after parking (expired, or refused when released) had no
effect, so it does not use up its ce_id: its inbox row is forgotten and a
resend with the same ce_id (the HL7 bridge derives it from the message) is
applied like a new record, as a record refused on arrival would be."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib.resources import files

import asyncpg
import yaml
from yigongti_contracts.base import StrictModel
from yigongti_contracts.common import FieldError, IntakeRejected
from yigongti_contracts.registry import model_for
from yigongti_kit import inbox, timers
from yigongti_kit.consumer import Intake, Rejection

from . import locking
from .events import SERVICE, emit

log = logging.getLogger(__name__)

EXPIRY_TIMER = "parked_expiry"


@dataclass(frozen=True)
class Origin:
    """Who sent a record and where its answer goes; kept with a parked record."""

    ce_id: str
    ce_type: str
    ce_source: str
    answer_key: str
    sender_institution: str | None


class Park(Exception):
    """Raised by an apply function: wait for (kind, key) to exist. `lock` is
    the lock whoever makes it exist holds while it releases what waits: by
    default the parking lock on (kind, key); for a tube's receipt, which holds
    the order lock (locking.py), ("order", order_id)."""

    def __init__(self, kind: str, key: str, field: str,
                 lock: tuple[str, str] | None = None) -> None:
        super().__init__(f"waiting for {kind}")
        self.kind = kind
        self.key = key
        self.field = field
        self.lock = lock or (kind, key)


Apply = Callable[[asyncpg.Connection, StrictModel, Origin], Awaitable[None]]


@cache
def grace(ce_type: str) -> timedelta:
    raw = yaml.safe_load((files("yigongti_lab") / "policy" / "parking.yaml").read_text())
    return timedelta(minutes=raw["grace_minutes"][ce_type])


def origin_of(intake: Intake) -> Origin:
    return Origin(
        ce_id=intake.envelope.id,
        ce_type=intake.envelope.type,
        ce_source=intake.envelope.source,
        answer_key=intake.event.kafka_key(),
        sender_institution=intake.sender.institution_id if intake.sender else None,
    )


async def run(conn: asyncpg.Connection, event: StrictModel, origin: Origin,
              apply: Apply, *, field: str | None = None) -> None:
    """Apply `event`, or park it if its prerequisite is missing (`field`, when
    given, names the part of the sender's record that waits)."""
    locked: set[tuple[str, str]] = set()
    while True:
        try:
            async with conn.transaction():
                await apply(conn, event, origin)
            return
        except Park as wait:
            if wait.lock in locked:
                if field is not None:
                    wait.field = field
                await park(conn, event, origin, wait)
                return
            # Intake is handled on several partitions at once: the prerequisite
            # may be committing right now. Take the lock it holds while it
            # releases (migrations/0007, locking.py), outside the savepoint
            # that was just rolled back, then look again before parking.
            await locking.lock(conn, *wait.lock)
            locked.add(wait.lock)


async def park(conn: asyncpg.Connection, event: StrictModel, origin: Origin, wait: Park) -> None:
    """Park `event` waiting for what `wait` names. Call it through `run`, which
    holds the prerequisite's lock."""
    parked_id = await conn.fetchval(
        """INSERT INTO parked (waiting_kind, waiting_key, ce_id, ce_type, ce_source, answer_key,
                               sender_institution, payload)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id""",
        wait.kind, wait.key, origin.ce_id, origin.ce_type, origin.ce_source, origin.answer_key,
        origin.sender_institution, {"event": event.model_dump(mode="json"), "field": wait.field},
    )
    await timers.schedule(conn, EXPIRY_TIMER, str(parked_id), after=grace(origin.ce_type))
    log.info("parked %s waiting for %s", origin.ce_type, wait.kind)


async def release(conn: asyncpg.Connection, kind: str, key: str,
                  appliers: dict[str, Apply]) -> int:
    """Apply what waited for (kind, key); returns how many records were released."""
    rows = await conn.fetch("SELECT * FROM release_parked($1, $2)", kind, key)
    for row in sorted(rows, key=lambda r: r["id"]):
        await timers.cancel(conn, EXPIRY_TIMER, str(row["id"]))
        origin = Origin(row["ce_id"], row["ce_type"], row["ce_source"], row["answer_key"],
                        row["sender_institution"])
        event = model_for(row["ce_type"]).model_validate(row["payload"]["event"])
        try:
            await run(conn, event, origin, appliers[row["ce_type"]])
        except Rejection as exc:
            await reject(conn, origin, exc.code, exc.fields)
            await forget(conn, origin)
    return len(rows)


# IntakeRejected.fields holds at most this many; the first ones are kept, as
# the kit does for records refused on arrival (a longer list made the answer
# itself fail, and a run's good lines were lost with it).
FIELDS_LIMIT = next(m.max_length for m in IntakeRejected.model_fields["fields"].metadata
                    if getattr(m, "max_length", None) is not None)


async def reject(conn: asyncpg.Connection, origin: Origin, code: str,
                 fields: list[tuple[str, str]]) -> None:
    """Answer `origin` with IntakeRejected; the fields past FIELDS_LIMIT are left out."""
    await emit(conn, IntakeRejected(
        key=origin.answer_key,
        service=SERVICE,
        rejected_id=origin.ce_id,
        rejected_type=origin.ce_type,
        sender=origin.ce_source,
        reason=code,
        fields=tuple(FieldError(field=f, code=c) for f, c in fields[:FIELDS_LIMIT]),
        rejected_at=datetime.now(UTC),
    ), key=origin.answer_key)


async def on_expiry(conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
    """Grace period over: refuse the record, keep it (marked expired)."""
    row = await conn.fetchrow(
        "UPDATE parked SET expired_at = db_now() WHERE id = $1 AND expired_at IS NULL RETURNING *",
        int(timer["key"]),
    )
    if row is None:  # released meanwhile
        return
    origin = Origin(row["ce_id"], row["ce_type"], row["ce_source"], row["answer_key"],
                    row["sender_institution"])
    await reject(conn, origin, "prerequisite_missing", [(row["payload"]["field"], "not_found")])
    await forget(conn, origin)


async def forget(conn: asyncpg.Connection, origin: Origin) -> None:
    """The record's inbox row (kit inbox, processed_events) removed, so that a
    resend with its ce_id is taken as new. Only for a record that had no
    effect: a parked part of a dispatch sent again is applied again, which
    changes nothing for the tubes already moving."""
    await inbox.forget(conn, origin.ce_source, origin.ce_id)

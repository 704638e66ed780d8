"""One fact through the state machine against the stored case, and its
outcome written in the caller's transaction: the case (and any other case it
changed), its timers, its events through the outbox, and the answers to
records refused. The caller holds nothing yet; this takes the case lock
(locking.py). Intake, HTTP actions and timers all come through here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache

import asyncpg
from yigongti_kit import timers

from . import locking, metrics, publish, store
from .case import CancelTimer, Outcome, Rules, SetTimer
from .domain import apply
from .events import ReferralAccepted
from .facts import IntakeFact, ReferralRequested, TimerFired

TIMER_KIND = "referral.case"  # one kit timer per (case, machine timer name)


@cache
def rules() -> Rules:
    return Rules.load()


def timer_key(referral_id: str, name: str) -> str:
    # A referral id matches the contracts' Identifier, which has no "/".
    return f"{referral_id}/{name}"


@dataclass(frozen=True)
class Refused(Exception):
    """The fact itself was refused: reason code and (field, code) problems."""

    reason: str
    problems: list[tuple[str, str]]


async def run(conn: asyncpg.Connection, fact: IntakeFact | TimerFired, *, fact_id: str = "",
              sender: str | None = None) -> Outcome:
    """Apply `fact` under the case lock. Raises Refused when the fact itself is
    refused (nothing was written); answers refused parked records itself."""
    parent_id = fact.parent_referral_id if isinstance(fact, ReferralRequested) else None
    await locking.lock_cases(conn, [fact.referral_id, *([parent_id] if parent_id else [])])
    current = await store.case(conn, fact.referral_id)
    parent = await store.case(conn, parent_id) if parent_id else None
    now = await timers.db_now(conn)
    outcome = apply(current, fact, now=now, rules=rules(), fact_id=fact_id, sender=sender,
                    parent=parent)
    own = [r for r in outcome.rejections if fact_id and r.fact_id == fact_id]
    if own:
        return _refuse(own[0])
    await write(conn, outcome, existed=current is not None, now=now)
    return outcome


def _refuse(rejection) -> Outcome:
    raise Refused(rejection.reason.value, [(f, c.value) for f, c in rejection.fields])


async def write(conn: asyncpg.Connection, outcome: Outcome, *, existed: bool,
                now: datetime) -> None:
    for other in outcome.others:
        if other.referral_id != (outcome.case.referral_id if outcome.case else None):
            await locking.lock_case(conn, other.referral_id)  # a child made at once: see RULE
            await store.save(conn, other)
    if outcome.case is not None:
        await store.save(conn, outcome.case)
    elif existed and outcome.rejections:
        # An unopened case whose parked records were all refused: nothing stays.
        await store.delete(conn, outcome.rejections[0].referral_id)
    for t in outcome.timers:
        if isinstance(t, SetTimer):
            await timers.schedule(conn, TIMER_KIND, timer_key(t.referral_id, t.name), at=t.due_at,
                                  payload={"referral_id": t.referral_id, "name": t.name,
                                           "due_at": t.due_at.isoformat()})
        elif isinstance(t, CancelTimer):
            await timers.cancel(conn, TIMER_KIND, timer_key(t.referral_id, t.name))
    await publish.emit(conn, [publish.contract_event(e) for e in outcome.events])
    for r in outcome.rejections:
        await publish.answer_refused(conn, r.fact_id, r.reason.value,
                                     [(f, c.value) for f, c in r.fields])
    metrics.observe(outcome.events, now)
    for e in outcome.events:
        if isinstance(e, ReferralAccepted) and outcome.case and outcome.case.opened_at:
            # A record's own time may precede the opening on the service's
            # clock (a terminal's clock, a record queued offline): counted as 0.
            minutes = (e.accepted_at - outcome.case.opened_at).total_seconds() / 60
            metrics.acceptance(outcome.case.urgency.value, e.to_institution, max(0.0, minutes))


async def on_timer(conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
    """A machine timer fired (kit poller, in its transaction)."""
    payload = timer["payload"]
    if isinstance(payload, str):
        import json
        payload = json.loads(payload)
    await run(conn, TimerFired(payload["referral_id"], payload["name"],
                               datetime.fromisoformat(payload["due_at"])))

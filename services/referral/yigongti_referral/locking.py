"""The referral service's one locking rule: the case lock.

THE RULE. A transaction that reads a case to change it (its row in `cases`,
its timers, the outbox rows of its events, the IntakeRejected answers to
records parked in it) first takes that case's lock and holds it until it
commits:

    SELECT pg_advisory_xact_lock(hashtextextended('case' || chr(31) || referral_id, 0))

(`lock_case`). Only then does it read the case (store.case) and write it back.

- Intake handlers (handlers.py, in the kit's consumer transaction) lock the
  record's referral_id. A ReferralRequested naming a parent (a confirmed
  re-route) changes two cases: it locks both, in ascending referral id
  (`lock_cases`). A re-route opened at once (an emergency) creates its child
  under the parent's lock, and takes the child's lock after the parent's
  (whatever their order): the child's id is derived from the parent's, so
  nobody can hold or wait for it before that transaction commits, and no
  cycle forms.
- HTTP actions (api.py: accept, decline, departure, arrival, discharge,
  follow-up, cancel) lock the case they act on, the same way.
- Timer handlers (a deadline, a follow-up round, the request grace) lock the
  case of the timer.
- Subscriptions: a lab critical value on a patient in transit reads the
  patient's cases in transit without a lock (it changes none; it only
  forwards); the recognised-results index and suggestions touch no case.
- Reads (the GET routes, the feed, metrics) take no lock.

Why an advisory lock and not the row (SELECT … FOR UPDATE): the lock must
exist before the case does (records parked before their request, two
requests racing under one id). Why one lock per case: every path goes
through the one state machine (domain.apply), which decides on the whole
case; a second lock would let two paths each decide on a stale copy.

Deadlocks: a consumer batch may apply up to 25 records and holds each
case's lock until it commits, so two partitions can take two cases' locks in
opposite orders; PostgreSQL aborts one (SQLSTATE 40P01) and the kit reads
that partition again. Records of one case share a Kafka key and so a
partition, which keeps this rare.
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('case' || chr(31) || $1, 0))"


async def lock_case(conn: asyncpg.Connection, referral_id: str) -> None:
    await conn.execute(_LOCK, referral_id)


async def lock_cases(conn: asyncpg.Connection, referral_ids: Iterable[str]) -> None:
    """Several cases' locks, in ascending referral id."""
    for referral_id in sorted(set(referral_ids)):
        await lock_case(conn, referral_id)

"""The settlement's one locking rule.

THE RULE. Three kinds of transaction lock, always taken in this order and
held until commit:

    1. ("settlement", settlement_id)  the counter's attempt (<institution>:<outBizNo>)
    2. ("visit", visit_id)            the charges posted to the visit
    3. ("person", person_id)          the person's accumulators, settlements, stays

    SELECT pg_advisory_xact_lock(hashtextextended(kind || chr(31) || key, 0))

- An identity check (identity.verify) takes 1 only: it changes no
  accumulator, and a retry of the same outBizNo waits for the first answer.
- A settlement (handlers.settle_new, reached by both doors: the intake's
  handlers.settle and the counter's POST /settlements, each of which takes 1
  first) takes 2 then 3, in one statement (`lock_visit_and_person`); only
  then does it read the accumulators, the visit's unsettled charges and the
  person's history it decides on. So two settlements of one person
  serialise on 3 (the second reads what the first wrote: the accumulators
  change exactly once per settlement), and a retried outBizNo waits on 1 and
  finds the first one's answer.
- A reversal takes 1 (the settlement's), then 3.
- A charge from the lab or diagnosis (charges.py) takes 2: a charge posted
  while its visit is being settled is either in that settlement or left for
  the next (a supplementary one); never half.
- A safety-net grant and an auditor's decision take 3 / nothing (a decision
  changes one flag row, with UPDATE ... WHERE decision IS NULL).
- Reads (GET routes, the feed, the pre-check) take none.

Why advisory locks: the settlement row does not exist before its lock is
needed (idempotency by outBizNo), nor does a visit; one order for all paths
leaves no cycle. A consumer batch may hold several visits' locks (2) across
records; they are taken in record order, so two partitions can cross: the
database detects it (40P01) and the kit retries the batch.
"""

from __future__ import annotations

import asyncpg


def _lock(kind: str, key: str) -> str:
    return f"pg_advisory_xact_lock(hashtextextended({kind} || chr(31) || {key}, 0))"


_LOCK = f"SELECT {_lock('$1', '$2')}"
_LOCK_VISIT_AND_PERSON = "SELECT " + _lock("'visit'", "$1") + ", " + _lock("'person'", "$2")


async def lock(conn: asyncpg.Connection, kind: str, key: str) -> None:
    await conn.execute(_LOCK, kind, key)


async def lock_settlement(conn: asyncpg.Connection, settlement_id: str) -> None:
    await lock(conn, "settlement", settlement_id)


async def lock_visit(conn: asyncpg.Connection, visit_id: str) -> None:
    await lock(conn, "visit", visit_id)


async def lock_person(conn: asyncpg.Connection, person_id: int) -> None:
    await lock(conn, "person", str(person_id))


async def lock_visit_and_person(conn: asyncpg.Connection, visit_id: str, person_id: int) -> None:
    """2 then 3 in one round trip (a select list is evaluated left to right)."""
    await conn.execute(_LOCK_VISIT_AND_PERSON, visit_id, str(person_id))

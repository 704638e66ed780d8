"""The diagnosis service's one locking rule: the request row.

THE RULE. A transaction that changes anything of a request (its status, claim,
lease, report, critical finding, charge, recognition, timers) first locks that
request's row in `requests` (SELECT … FOR UPDATE) and holds it until it
commits. Only then does it read what it decides on and write. Nothing else is
locked while a request row is waited for, so no transaction holds two request
rows and no cycle forms.

- A request's first transaction (DiagnosisRequested) has no row to lock: it
  inserts with ON CONFLICT (request_id) DO NOTHING, so of two copies one
  inserts and the other finds the row and is refused as `request_exists`.
  Its recording is taken with one UPDATE … WHERE used_by IS NULL, so a
  recording is used once even by two requests at the same time.
- Claims: "claim next" takes the first queued row of the centre's worklist
  with FOR UPDATE SKIP LOCKED: a row another transaction holds is being
  claimed, cancelled or expired right now, and the reader gets the next one
  instead of waiting; the row is then re-read under the lock (status still
  queued), so two readers never hold the same study. "Claim this one" waits
  for the row (FOR UPDATE) and answers 409 when it is no longer queued.
- Intake handlers (cancellation, acknowledgement), HTTP actions (release,
  sign, amend) and timers (lease expiry, overdue, escalation, PACS recheck)
  lock the one request they act on with `lock_request`.
- Reads (worklist, report, feed, FHIR) take no lock.

Why the row and not an advisory lock as the lab's: the worklist claim needs
SKIP LOCKED on the rows it orders, and one kind of lock for every path means a
cancellation and a claim can never both succeed (the lab's lesson, issue 8
item 10).
"""

from __future__ import annotations

import asyncpg

CLAIM_NEXT = """
    SELECT * FROM requests
     WHERE reading_centre = $1 AND status = 'queued' AND modality = ANY($2::text[])
     ORDER BY priority_rank, due_at, request_id
     LIMIT 1 FOR UPDATE SKIP LOCKED"""


async def lock_request(conn: asyncpg.Connection, request_id: str) -> asyncpg.Record | None:
    """The request's row, locked until commit; None for an unknown request."""
    return await conn.fetchrow("SELECT * FROM requests WHERE request_id = $1 FOR UPDATE",
                               request_id)


async def lock_next_queued(conn: asyncpg.Connection, centre: str,
                           modalities: list[str]) -> asyncpg.Record | None:
    """The first queued row of the centre's worklist nobody else holds, locked."""
    return await conn.fetchrow(CLAIM_NEXT, centre, modalities)

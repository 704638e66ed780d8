"""The clinic's feed of a service (DESIGN §6): `GET /feed?after=&limit=&wait=`,
the events about the caller's institution, oldest first after a cursor, with
a long-poll.

The `feed` table is filled as the relay marks events sent (kit migration
0009); which institution sees which event is the service's `feed_route()`
SQL function, in its own migrations. Long-polls are woken by one watcher per
process: while anyone waits it asks the database every WATCH_S which
institutions got rows above the last seq it saw and wakes their waiters,
instead of every waiting clinic reading its page again and again. Sound
because feed rows become visible in seq order; a caller passes the feed's
highest seq from before it read its page, so a row arriving between its read
and its wait is not missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError

from .auth import Principal, require_principal
from .db import is_infra_error
from .telemetry import background_context

log = logging.getLogger(__name__)

WATCH_S = 0.01
MAX_WAIT_S = 25
_HIGH_WATER = "SELECT coalesce(max(seq), 0) FROM feed"
_NEWER = """SELECT institution_id, max(seq) AS seq FROM feed
            WHERE seq > $1 GROUP BY institution_id"""
_PAGE = """SELECT seq, ce_id, type, aggregate_id, payload, created_at FROM feed
           WHERE institution_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"""


class FeedWatch:
    def __init__(self, pool: asyncpg.Pool, interval: float = WATCH_S) -> None:
        self._pool = pool
        self._interval = interval
        self._mark: int | None = None  # rows up to here have been looked at
        self._events: dict[str, asyncio.Event] = {}
        self._waiting = 0
        self._task: asyncio.Task | None = None

    async def wait(self, institution: str, mark: int, timeout: float) -> None:
        """Until the feed has a row for `institution` above `mark` (the high
        water read before the caller's page), or `timeout` seconds."""
        if self._mark is not None and self._mark > mark:
            return  # the feed moved since the caller read it: read again
        if self._mark is None:
            self._mark = mark
        event = self._events.setdefault(institution, asyncio.Event())
        self._waiting += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._waiting -= 1

    async def _watch(self) -> None:
        background_context()  # started inside some request: its polls are nobody's
        try:
            while self._waiting:
                await asyncio.sleep(self._interval)
                try:
                    async with self._pool.acquire() as conn:
                        rows = await conn.fetch(_NEWER, self._mark)
                except Exception as exc:  # noqa: BLE001 - waiters time out and answer empty
                    if not is_infra_error(exc):
                        log.exception("feed watch failed")
                    await asyncio.sleep(0.5)
                    continue
                for row in rows:
                    self._mark = max(self._mark or 0, row["seq"])
                    event = self._events.pop(row["institution_id"], None)
                    if event is not None:
                        event.set()
        finally:
            self._mark = None  # nobody watches: what was seen goes stale


_FEED_QUERY = frozenset({"after", "limit", "wait"})


def feed_router(*, roles: Iterable[str], aggregate_field: str, description: str,
                openapi_extra: dict | None = None) -> APIRouter:
    """GET /feed for callers holding one of `roles`, scoped to their
    institution; each item names its aggregate as `aggregate_field`
    ("order_id", "request_id"…)."""
    allowed = frozenset(roles)
    router = APIRouter(tags=["clinic"])

    @router.get("/feed", summary="The institution's feed of events", description=description,
                openapi_extra=openapi_extra)
    async def feed(request: Request,
                   after: int = Query(0, ge=0, le=2**63 - 1, description="last seq seen"),
                   limit: int = Query(100, ge=1, le=500),
                   wait: float = Query(0, ge=0, le=MAX_WAIT_S,
                                       description="long-poll seconds when empty"),
                   principal: Principal = Depends(require_principal)) -> dict:
        if set(request.query_params) - _FEED_QUERY:
            # A typo (`afetr=`) would silently read from the start. The name is not
            # repeated: it is whatever the caller sent.
            raise RequestValidationError([{"loc": ("query",), "type": "unknown_parameter"}])
        if not set(principal.roles) & allowed:
            raise HTTPException(403, "missing role: " + " or ".join(sorted(allowed)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        pool = request.app.state.pool
        while True:
            async with pool.acquire() as conn:
                # Read before the page: a row above it arrived after this read.
                mark = await conn.fetchval(_HIGH_WATER) if wait else 0
                rows = await conn.fetch(_PAGE, principal.institution, after, limit)
            if rows or loop.time() >= deadline:
                break
            await _watch(request).wait(principal.institution, mark, deadline - loop.time())
        return {
            "items": [{"seq": r["seq"], "id": str(r["ce_id"]), "type": r["type"],
                       aggregate_field: r["aggregate_id"], "time": r["created_at"].isoformat(),
                       "data": r["payload"]} for r in rows],
            "next": rows[-1]["seq"] if rows else after,
        }

    return router


def _watch(request: Request) -> FeedWatch:
    state = request.app.state
    if getattr(state, "feed_watch", None) is None:
        state.feed_watch = FeedWatch(state.pool)
    return state.feed_watch

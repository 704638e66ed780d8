"""Wakes the clinic feed's long-polls (GET /feed?wait=) when their feed grows.

While anyone waits, one watcher per process asks the database every WATCH_S
which institutions got feed rows above the last seq it saw, and wakes the
waiters of those institutions; each then reads its page again. That is one
small query for the whole process instead of every waiting clinic reading its
page every 200 ms, and a critical value reaches a waiting clinic about WATCH_S
after its publication.

Sound because feed rows become visible in seq order (the relay fills the feed
as it marks events sent, migration 0010): a row above a seq already seen is
new. A caller passes the feed's highest seq from before it read its page, so
a row that arrives between its read and its wait is not missed.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from yigongti_kit.db import is_infra_error

log = logging.getLogger(__name__)

WATCH_S = 0.01
HIGH_WATER = "SELECT coalesce(max(seq), 0) FROM clinic_feed"
_NEWER = """SELECT institution_id, max(seq) AS seq FROM clinic_feed
            WHERE seq > $1 GROUP BY institution_id"""


class FeedWatch:
    def __init__(self, pool: asyncpg.Pool, interval: float = WATCH_S) -> None:
        self._pool = pool
        self._interval = interval
        self._mark: int | None = None  # rows up to here have been looked at
        self._events: dict[str, asyncio.Event] = {}
        self._waiting = 0
        self._task: asyncio.Task | None = None

    async def wait(self, institution: str, mark: int, timeout: float) -> None:
        """Until the feed has a row for `institution` above `mark` (HIGH_WATER
        read before the caller's page), or `timeout` seconds."""
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

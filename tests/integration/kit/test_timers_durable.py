"""Durable timers: set before a restart, they fire after it, once, also with two
pollers running; a handler may set its own timer again; a cancelled timer
never fires (issue 2, "Checked by"). Time moves with shift_clock."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest_asyncio
from kitflow import count, wait_until
from yigongti_kit.db import create_pool
from yigongti_kit.timers import TimerPoller, cancel, schedule, shift_clock


@pytest_asyncio.fixture
async def timer_schema(kit_schema, sql) -> str:
    """The kit's tables plus `effects`: one row per handler run (no uniqueness, so a
    timer fired twice shows as two rows)."""
    await sql.execute("CREATE TABLE effects (kind text, key text, at timestamptz DEFAULT now())")
    return kit_schema


async def _effect(conn, row) -> None:
    await conn.execute("INSERT INTO effects (kind, key) VALUES ($1, $2)", row["kind"], row["key"])


async def _again_in_an_hour(conn, row) -> None:
    await _effect(conn, row)
    await schedule(conn, row["kind"], row["key"], after=timedelta(hours=1))


_lost_sessions: list[str] = []


async def _session_dies_first_time(conn, row) -> None:
    """Writes its effect, then (the first time) loses its database session before
    the commit, as a crashed poller process would."""
    await _effect(conn, row)
    if row["key"] not in _lost_sessions:
        _lost_sessions.append(row["key"])
        await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")


HANDLERS = {"remind": _effect, "repeat": _again_in_an_hour, "fragile": _session_dies_first_time}


@asynccontextmanager
async def _poller(database_url: str, schema: str, **kwargs):
    """A poller with its own pool, as one service process would have; stopped on exit."""
    pool = await create_pool(database_url, schema, max_size=3)
    poller = TimerPoller(pool, HANDLERS, interval=0.05, **kwargs)
    task = asyncio.create_task(poller.run())
    try:
        yield poller
    finally:
        poller.stop()
        await asyncio.wait_for(task, 10)
        await pool.close()


async def _effects(sql, key: str | None = None) -> int:
    if key is None:
        return await count(sql, "SELECT count(*) FROM effects")
    return await count(sql, "SELECT count(*) FROM effects WHERE key = $1", key)


async def _quiet(poller: TimerPoller, rounds: int = 3) -> None:
    """Let the poller run a few more rounds (to show nothing more fires)."""
    for _ in range(rounds):
        await poller.run_once()


async def test_timer_set_before_a_restart_fires_after_it_once(timer_schema, sql, database_url):
    async with _poller(database_url, timer_schema) as before:
        await schedule(sql, "remind", "order-1", after=timedelta(hours=2))
        await _quiet(before)
        assert await _effects(sql) == 0  # not due yet
    # The "service" is down; time passes; a new process starts.
    await shift_clock(sql, timedelta(hours=2, seconds=1))
    async with _poller(database_url, timer_schema) as after:
        await wait_until(lambda: _effects_at_least(sql, 1), what="timer fired")
        await _quiet(after)
    assert await _effects(sql, "order-1") == 1
    row = await sql.fetchrow("SELECT fired_at, attempts FROM timers WHERE key = 'order-1'")
    assert row["fired_at"] is not None and row["attempts"] == 0


async def test_two_pollers_fire_each_due_timer_exactly_once(timer_schema, sql, database_url):
    n = 300
    async with sql.transaction():
        for i in range(n):
            await schedule(sql, "remind", f"t{i}", after=timedelta(minutes=5))
    # Both pollers are running, with small batches so that they interleave.
    async with _poller(database_url, timer_schema, batch_size=7) as one, \
            _poller(database_url, timer_schema, batch_size=7) as two:
        await shift_clock(sql, timedelta(minutes=6))
        await wait_until(lambda: _effects_at_least(sql, n), what="all timers fired")
        await _quiet(one)
        await _quiet(two)
        assert one.fired + two.fired == n
    duplicates = await sql.fetch(
        "SELECT key, count(*) FROM effects GROUP BY key HAVING count(*) > 1")
    assert duplicates == []
    assert await _effects(sql) == n


async def test_a_timer_set_again_by_its_handler_fires_again(timer_schema, sql, database_url):
    await schedule(sql, "repeat", "escalate-1", after=timedelta(minutes=30))
    async with _poller(database_url, timer_schema) as poller:
        await shift_clock(sql, timedelta(minutes=31))
        await wait_until(lambda: _effects_at_least(sql, 1), what="first firing")
        await _quiet(poller)
        assert await _effects(sql) == 1  # set again an hour ahead: not due
        await shift_clock(sql, timedelta(hours=1))
        await wait_until(lambda: _effects_at_least(sql, 2), what="second firing")
        await _quiet(poller)
        assert await _effects(sql) == 2
    row = await sql.fetchrow("SELECT fired_at, due_at > db_now() AS ahead FROM timers")
    assert row["fired_at"] is None and row["ahead"]  # armed for a third time


async def test_a_cancelled_timer_never_fires(timer_schema, sql, database_url):
    await schedule(sql, "remind", "keep", after=timedelta(minutes=10))
    await schedule(sql, "remind", "drop", after=timedelta(minutes=10))
    assert await cancel(sql, "remind", "drop")
    assert not await cancel(sql, "remind", "drop")  # once only
    assert not await cancel(sql, "remind", "nothing-there")
    async with _poller(database_url, timer_schema) as poller:
        await shift_clock(sql, timedelta(minutes=11))
        await wait_until(lambda: _effects_at_least(sql, 1), what="the other timer fired")
        await _quiet(poller)
    assert await _effects(sql, "keep") == 1
    assert await _effects(sql, "drop") == 0
    # A fired timer cannot be cancelled any more; scheduling again re-arms it.
    assert not await cancel(sql, "remind", "keep")
    await schedule(sql, "remind", "drop", after=timedelta(minutes=1))
    async with _poller(database_url, timer_schema) as poller:
        await shift_clock(sql, timedelta(minutes=2))
        await wait_until(lambda: _effects_at_least(sql, 2), what="re-armed timer fired")
        await _quiet(poller)
    assert await _effects(sql, "drop") == 1


async def _effects_at_least(sql, n: int) -> bool:
    return await _effects(sql) >= n


async def test_a_timer_whose_firing_is_cut_short_fires_again_once(timer_schema, sql, database_url):
    """Fired mark and effect share a transaction: losing the session before the
    commit undoes both, and the timer stays due until a firing commits."""
    await schedule(sql, "fragile", "f1", after=timedelta(minutes=1))
    async with _poller(database_url, timer_schema) as poller:
        await shift_clock(sql, timedelta(minutes=2))
        await wait_until(lambda: _effects_at_least(sql, 1), what="fired after the lost session")
        await _quiet(poller)
        assert poller.fired == 1
    assert _lost_sessions.count("f1") == 1
    assert await _effects(sql, "f1") == 1

"""Small helpers of the kit's integration tests: wait on a condition, count rows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 30.0,  # noqa: ASYNC109
                     what: str = "condition", interval: float = 0.05) -> None:
    """Poll the async `predicate` until it is true; TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.0f} s")
        await asyncio.sleep(interval)


async def count(conn: asyncpg.Connection, query: str, *args) -> int:
    return int(await conn.fetchval(query, *args))

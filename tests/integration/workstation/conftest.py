"""The diagnosis service with its workstation, two replicas on one database,
one stack per test module."""

from __future__ import annotations

import pytest_asyncio
from wsflow import start_ws


@pytest_asyncio.fixture(scope="module")
async def ws(database_url, kafka_bootstrap, broker_kind, dev_keys):
    dx, bases, stop = await start_ws(database_url, kafka_bootstrap, broker_kind, dev_keys,
                                     replicas=2)
    dx.bases = bases
    try:
        yield dx
    finally:
        await stop()

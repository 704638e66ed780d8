"""The diagnosis service in the test's process, one per test module (its own
schema and topic prefix), on the real broker, PostgreSQL and (for imaging) Orthanc."""

from __future__ import annotations

import pytest_asyncio
from diagflow import start_dx


@pytest_asyncio.fixture(scope="module")
async def dx(database_url, kafka_bootstrap, broker_kind, dev_keys):
    service, _, cleanup = await start_dx(database_url, kafka_bootstrap, broker_kind, dev_keys)
    try:
        yield service
    finally:
        await cleanup()

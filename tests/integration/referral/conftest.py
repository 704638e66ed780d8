"""One referral service per test module (quick: the broker's group joins and
the migrations once), on the real broker and database."""

from __future__ import annotations

import pytest_asyncio
from referralflow import start_referral


@pytest_asyncio.fixture(scope="module")
async def referral(database_url, kafka_bootstrap, broker_kind, dev_keys, tmp_path_factory):
    service, stop = await start_referral(
        database_url=database_url, kafka_bootstrap=kafka_bootstrap, broker_kind=broker_kind,
        dev_keys=dev_keys, directory=tmp_path_factory.mktemp("referral"))
    try:
        yield service
    finally:
        await stop()

"""The stack starts the referral service from its console script
(yigongti-referral, SERVICES in yigongti_deploy/stack.py) and it comes ready:
migrated, its intake and both subscriptions joined, HTTP up."""

from __future__ import annotations

import httpx
from yigongti_deploy import stack as stack_module


async def test_the_stack_runs_referral(monkeypatch, tmp_path, admin_database_url) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)  # its own embedded broker
    monkeypatch.setenv("DATABASE_URL", admin_database_url)
    assert stack_module.service_entry("referral").script == "yigongti-referral"
    stack = stack_module.Stack(tmp_path / "run", ["referral"])
    await stack.start()
    try:
        referral = stack.services["referral"]
        async with httpx.AsyncClient() as client:
            ready = await client.get(f"{referral.url}/readyz")
            assert ready.status_code == 200, ready.text
            answer = await client.get(f"{referral.url}/referrals")
            assert answer.status_code == 401  # a bearer token is required
    finally:
        await stack.stop()

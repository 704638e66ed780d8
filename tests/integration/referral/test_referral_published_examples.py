"""Every intake example referral publishes passes the real service as published.

Read from the published files, never from Python objects:
contracts/asyncapi/referral.yaml gives each example (headers and payload),
contracts/terminal/intake-contract.json the order, the terminal and the answer.
Only ce_time, x-nonce and x-signature are made fresh (placeholders in the
documents). The example terminals are the dev terminals (yigongti_deploy/devkeys.py)."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest_asyncio
import yaml
from labflow import ce_type, payload
from referralflow import refused, start_referral

CONTRACTS = Path(__file__).resolve().parents[3] / "contracts"
DOC = yaml.safe_load((CONTRACTS / "asyncapi" / "referral.yaml").read_text("utf-8"))
CONTRACT = json.loads((CONTRACTS / "terminal" / "intake-contract.json").read_text("utf-8"))
REFERRAL = CONTRACT["services"]["referral"]
SEQUENCE = REFERRAL["examples"]["sequence"]
EXAMPLES_START = datetime(2025, 1, 15, 2, 0, tzinfo=UTC)


@pytest_asyncio.fixture(scope="module")
async def referral(database_url, kafka_bootstrap, broker_kind, dev_keys, tmp_path_factory):
    service, stop = await start_referral(
        database_url=database_url, kafka_bootstrap=kafka_bootstrap, broker_kind=broker_kind,
        dev_keys=dev_keys, directory=tmp_path_factory.mktemp("examples"))
    try:
        yield service
    finally:
        await stop()


async def _send(referral, dev_keys, headers: dict[str, str], body: dict) -> str:
    signer = dev_keys.referral_signer(headers["x-terminal-id"])
    value = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    fresh = {**headers, "ce_time": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
    envelope = [(k, v.encode()) for k, v in fresh.items() if not k.startswith("x-")]
    signed = signer.sign(envelope, value, nonce=secrets.token_hex(16))
    key = str(body[REFERRAL["messages"][headers["ce_type"]]["key_field"]])
    await referral.producer.send_and_wait(referral.topics["referral.intake.v1"],
                                          key=key.encode(), value=value, headers=signed)
    return headers["ce_id"]


async def test_the_published_examples_get_the_published_answers(referral, dev_keys) -> None:
    # The examples are dated 2025-01-15 from 02:00 UTC: the service's clock is
    # set there, so their deadlines (a departure's "lost" 12 h later) lie ahead
    # of it as they would for a live referral.
    async with referral.pool.acquire() as conn:
        shift = EXAMPLES_START - await conn.fetchval("SELECT db_now()")
    await referral.shift_clock(shift)
    parked = []
    for step in SEQUENCE:
        [example] = DOC["components"]["messages"][step["message"]]["examples"]
        headers, body = dict(example["headers"]), example["payload"]
        assert headers["x-terminal-id"] == step["terminal"]
        ce_id = await _send(referral, dev_keys, headers, body)
        if step["outcome"] == "accepted":
            [first, *_] = await referral.wait(
                lambda r, ce_id=ce_id, step=step: ce_type(r) == step["answer"] or
                refused(ce_id)(r))
            assert ce_type(first) == step["answer"], (step["message"], payload(first))
        elif step["outcome"] == "refused":
            [answer] = await referral.wait(refused(ce_id))
            assert payload(answer)["reason"] == step["reason"], step["message"]
        else:
            parked.append((ce_id, step))
    # A parked record waits for its request for the grace period, then is refused.
    for ce_id, _ in parked:
        assert not [r for r in referral.events.records if refused(ce_id)(r)]
    await referral.shift_clock(timedelta(hours=25))
    for ce_id, step in parked:
        [answer] = await referral.wait(refused(ce_id))
        assert payload(answer)["reason"] == step["then_reason"]

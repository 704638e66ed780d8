"""Every intake example the diagnosis service publishes gets its documented
answer from the real service, sent as published (contracts/asyncapi/diagnosis.yaml,
contracts/terminal/intake-contract.json); only ce_time, x-nonce and x-signature
are made fresh (the published ones are placeholders)."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from pathlib import Path

import yaml
from labflow import payload, rejection_for

CONTRACTS = Path(__file__).resolve().parents[3] / "contracts"
DOC = yaml.safe_load((CONTRACTS / "asyncapi" / "diagnosis.yaml").read_text("utf-8"))
CONTRACT = json.loads((CONTRACTS / "terminal" / "intake-contract.json").read_text("utf-8"))
DX = CONTRACT["services"]["diagnosis"]


async def test_every_published_intake_example_gets_its_documented_answer(dx):
    signer = dx.dev_keys.signer()
    steps = DX["examples"]["sequence"]
    channel = DOC["channels"]["diagnosisIntake"]["messages"]
    assert [s["message"] for s in steps] == list(channel)
    for step in steps:
        [example] = DOC["components"]["messages"][step["message"]]["examples"]
        headers, body = dict(example["headers"]), example["payload"]
        assert headers["x-terminal-id"] == signer.terminal_id == step["terminal"]
        value = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        fresh = {**headers, "ce_time": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
        envelope = [(k, v.encode()) for k, v in fresh.items() if not k.startswith("x-")]
        signed = signer.sign(envelope, value, nonce=secrets.token_hex(16))
        key_field = DX["messages"][headers["ce_type"]]["key_field"]
        await dx.terminal.send_raw(str(body[key_field]).encode(), value, signed)
        assert step["outcome"] == "refused"
        [refused] = await dx.events.wait_for(rejection_for(headers["ce_id"]))
        assert payload(refused)["reason"] == step["reason"]

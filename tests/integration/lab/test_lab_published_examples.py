"""Every intake example the lab publishes passes the real service as published.

The examples are read from the published files, never from Python objects:
contracts/asyncapi/lab.yaml gives each message's example (headers and payload),
contracts/terminal/intake-contract.json the order they are sent in, by which
dev terminal, and what each is answered with, and the schema files the key
field. Only ce_time, x-nonce and x-signature are made fresh (the published ones
are placeholders, as the documents say); ce_id, ce_source, x-terminal-id and
the payload are sent as published.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from labflow import ce_type, header, payload, rejection_for
from labjourney import fetchval, until
from yigongti_kit.timers import shift_clock

CONTRACTS = Path(__file__).resolve().parents[3] / "contracts"
DOC = yaml.safe_load((CONTRACTS / "asyncapi" / "lab.yaml").read_text("utf-8"))
CONTRACT = json.loads((CONTRACTS / "terminal" / "intake-contract.json").read_text("utf-8"))
LAB = CONTRACT["services"]["lab"]


def _published_record(message: str) -> tuple[dict[str, str], dict]:
    [example] = DOC["components"]["messages"][message]["examples"]
    return dict(example["headers"]), example["payload"]


def _key_field(ce_type_: str) -> str:
    schema_path = CONTRACTS / "terminal" / LAB["messages"][ce_type_]["schema"]
    return json.loads(schema_path.read_text("utf-8"))["x-key-field"]


def _signers(dev_keys) -> dict[str, object]:
    return {s.terminal_id: s for s in (dev_keys.signer(), dev_keys.lis_signer())}


async def _send(lab, signer, headers: dict[str, str], body: dict) -> str:
    """The published record with a fresh ce_time, nonce and signature; its ce_id."""
    assert headers["x-terminal-id"] == signer.terminal_id
    value = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    fresh = {**headers, "ce_time": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
    envelope = [(k, v.encode()) for k, v in fresh.items() if not k.startswith("x-")]
    signed = signer.sign(envelope, value, nonce=secrets.token_hex(16))
    key = str(body[_key_field(headers["ce_type"])])
    await lab.terminal.send_raw(key.encode(), value, signed)
    return headers["ce_id"]


async def _answered_with(lab, ce_id: str, step: dict) -> None:
    if step["outcome"] == "accepted":
        refused = rejection_for(ce_id)
        [first, *_] = await lab.events.wait_for(
            lambda r: ce_type(r) == step["answer"] or refused(r))
        assert not refused(first), (step["message"], payload(first))
        return
    if step["outcome"] == "refused":
        [refused] = await lab.events.wait_for(rejection_for(ce_id))
        assert payload(refused)["reason"] == step["reason"]
        return
    assert step["outcome"] == "parked"
    await until(lambda: fetchval(lab, "SELECT count(*) FROM parked WHERE ce_id = $1 AND "
                                      "expired_at IS NULL", ce_id), what="example parked")
    assert not [r for r in lab.events.records if rejection_for(ce_id)(r)]
    grace = timedelta(minutes=LAB["parked"][step["ce_type"]]["grace_minutes"] + 1)
    async with lab.pool.acquire() as conn:
        await shift_clock(conn, grace)
    try:
        [refused] = await lab.events.wait_for(rejection_for(ce_id))
    finally:
        async with lab.pool.acquire() as conn:
            await shift_clock(conn, -grace)
    assert payload(refused)["reason"] == step["then_reason"]
    assert payload(refused)["fields"] == [{"field": "barcode", "code": "not_found"}]


async def test_every_published_intake_example_gets_its_documented_answer(lab, dev_keys):
    signers = _signers(dev_keys)
    steps = LAB["examples"]["sequence"]
    channel = DOC["channels"]["labIntake"]["messages"]
    assert [s["message"] for s in steps] == list(channel)  # every intake example, in order
    for step in steps:
        headers, body = _published_record(step["message"])
        assert headers["ce_type"] == step["ce_type"]
        assert (step["terminal"], step["institution"]) in {
            (dev_keys.terminal_id, dev_keys.institution_id),
            (dev_keys.lis_terminal_id, dev_keys.lis_institution_id)}
        ce_id = await _send(lab, signers[step["terminal"]], headers, body)
        await _answered_with(lab, ce_id, step)
    # Nothing was dead-lettered, and each answer to an accepted example names its order.
    assert lab.dlq.records == []
    accepted = [r for r in lab.events.records if ce_type(r).endswith("order.accepted.v1")]
    assert [header(r, "ce_subject") for r in accepted] == ["ORD-20250115-0001"]

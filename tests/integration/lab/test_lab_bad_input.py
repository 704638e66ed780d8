"""Records the lab must refuse, each answered as DESIGN §6 says (issue 2,
"Checked by"): an IntakeRejected naming fields and codes but never values;
a dead-letter copy (error and origin in its headers, value byte-identical)
only for what could not even be decoded; no effect on the lab's state; and
the consumer goes on with the next record of the same partition."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from labflow import (
    ce_type,
    header,
    order,
    partition_of,
    payload,
    rejection_for,
    signed_raw,
    without,
)
from yigongti_contracts.lab.v1 import LabOrderPlaced
from yigongti_kit.dlq import read_dead_letters
from yigongti_kit.intake_auth import TerminalSigner
from yigongti_kit.terminal import build_record

# --- helpers -------------------------------------------------------------------


def body_of(o: LabOrderPlaced) -> bytes:
    """The JSON a terminal sends for `o` (as build_record writes it)."""
    return json.dumps(o.model_dump(mode="json"), separators=(",", ":")).encode()


def rejection_keyed(key: str):
    """Predicate: an IntakeRejected whose Kafka key is `key`."""
    return lambda r: ce_type(r).endswith("intake.rejected.v1") and r.key.decode() == key


async def order_ids(lab) -> list[str]:
    async with lab.pool.acquire() as conn:
        return [r["order_id"] for r in await conn.fetch("SELECT order_id FROM orders ORDER BY 1")]


async def goes_on(lab, dev_keys, key: bytes) -> LabOrderPlaced:
    """A good order, sent with the refused record's Kafka key so it lands on
    the same partition behind it, is accepted: the consumer went on."""
    good = order(dev_keys.institution_id)
    rec = lab.terminal.record(good)
    await lab.terminal.send_raw(rec.key, rec.value, rec.headers, partition=partition_of(key))
    await lab.events.wait_for(
        lambda r: ce_type(r).endswith("order.accepted.v1")
        and payload(r)["order_id"] == good.order_id
    )
    return good


def assert_dead_letter(lab, letter, rec, meta, error: str, headers=None) -> None:
    """The copy keeps the record (key, value, headers) and says what and where."""
    assert letter.value == rec.value  # byte-identical
    assert letter.key == rec.key
    assert header(letter, "dlq-error") == error
    assert header(letter, "dlq-source-topic") == lab.topics["lab.intake.v1"]
    assert header(letter, "dlq-source-partition") == str(meta.partition)
    assert header(letter, "dlq-source-offset") == str(meta.offset)
    assert header(letter, "dlq-consumer") == "lab"
    original = [(k, v) for k, v in letter.headers if not k.startswith("dlq-")]
    assert original == list(headers if headers is not None else rec.headers)


async def unverified(lab) -> list[tuple[str, str | None]]:
    """(reason, claimed terminal) of each record kept for ops, in arrival order."""
    async with lab.pool.acquire() as conn:
        return [(r["reason"], r["claimed_terminal"]) for r in await conn.fetch(
            "SELECT reason, claimed_terminal FROM unverified_intake ORDER BY kafka_offset")]


async def assert_not_dead_lettered(lab) -> None:
    """Read to the end of the dead-letter topic (exact, no waiting)."""
    assert await read_dead_letters(lab.settings, "lab") == []


# --- undecodable: answered and dead-lettered --------------------------------------


MALFORMED = {
    "truncated": lambda o: body_of(o)[:-40],  # cut inside the JSON
    "deeply_nested": lambda o: b"[" * 100_000,  # json.loads raises RecursionError
    "not_utf8": lambda o: b'{"order_id": "\xff\xfe"}',
    "empty": lambda o: b"",
}


@pytest.mark.parametrize("kind", MALFORMED)
async def test_malformed_json_is_rejected_and_dead_lettered(lab, dev_keys, kind):
    o = order(dev_keys.institution_id)
    broken = MALFORMED[kind](o)
    rec = signed_raw(lab.terminal.signer, LabOrderPlaced.CE_TYPE, broken, key=o.order_id)
    meta = await lab.terminal.send_raw(rec.key, rec.value, rec.headers)

    [answer] = await lab.events.wait_for(rejection_for(rec.ce_id))
    body = payload(answer)
    assert body["reason"] == "malformed_json"
    assert body["fields"] == [{"field": "value", "code": "json"}]
    assert body["rejected_type"] == LabOrderPlaced.CE_TYPE
    assert body["sender"] == lab.terminal.signer.source
    assert answer.key.decode() == o.order_id
    assert o.patient_ref.encode() not in answer.value

    [letter] = await lab.dlq.wait_for(lambda r: header(r, "ce_id") == rec.ce_id)
    assert_dead_letter(lab, letter, rec, meta, "malformed_json")

    good = await goes_on(lab, dev_keys, rec.key)
    assert await order_ids(lab) == [good.order_id]


async def test_unknown_type_is_rejected_and_dead_lettered(lab, dev_keys):
    o = order(dev_keys.institution_id)
    rec = signed_raw(lab.terminal.signer, "yigongti.lab.order.teleported.v1", body_of(o),
                     key=o.order_id)
    meta = await lab.terminal.send_raw(rec.key, rec.value, rec.headers)

    [answer] = await lab.events.wait_for(rejection_for(rec.ce_id))
    body = payload(answer)
    assert body["reason"] == "unknown_type"
    assert body["fields"] == [{"field": "ce_type", "code": "unknown"}]
    assert body["rejected_type"] == "yigongti.lab.order.teleported.v1"
    assert answer.key.decode() == o.order_id

    [letter] = await lab.dlq.wait_for(lambda r: header(r, "ce_id") == rec.ce_id)
    assert_dead_letter(lab, letter, rec, meta, "unknown_type")

    good = await goes_on(lab, dev_keys, rec.key)
    assert await order_ids(lab) == [good.order_id]


async def test_a_lab_event_type_is_not_intake(lab, dev_keys):
    """A registered type the lab publishes but does not take in is unknown on intake."""
    o = order(dev_keys.institution_id)
    rec = signed_raw(lab.terminal.signer, "yigongti.lab.order.accepted.v1", body_of(o),
                     key=o.order_id)
    await lab.terminal.send_raw(rec.key, rec.value, rec.headers)
    [answer] = await lab.events.wait_for(rejection_for(rec.ce_id))
    assert payload(answer)["reason"] == "unknown_type"
    await lab.dlq.wait_for(lambda r: header(r, "ce_id") == rec.ce_id)
    good = await goes_on(lab, dev_keys, rec.key)
    assert await order_ids(lab) == [good.order_id]


@pytest.mark.parametrize("missing", ["ce_specversion", "content-type"])
async def test_missing_header_is_rejected_naming_it_and_dead_lettered(lab, dev_keys, missing):
    """A header outside the signature is missing: the sender is verified, the
    record cannot be decoded. (A signed header missing fails the signature.)"""
    o = order(dev_keys.institution_id)
    rec = lab.terminal.record(o)
    headers = without(rec.headers, missing)
    meta = await lab.terminal.send_raw(rec.key, rec.value, headers)

    # The answer names the signed ce_id, which the signature vouches for.
    [answer] = await lab.events.wait_for(rejection_keyed(o.order_id))
    body = payload(answer)
    assert body["reason"] == "missing_header"
    assert body["fields"] == [{"field": missing, "code": "missing_header"}]
    assert body["rejected_id"] == rec.ce_id

    [letter] = await lab.dlq.wait_for(lambda r: r.key == rec.key)
    assert_dead_letter(lab, letter, rec, meta, "missing_header", headers)
    assert header(letter, "dlq-error-detail") == f"{missing}:missing_header"

    good = await goes_on(lab, dev_keys, rec.key)
    assert await order_ids(lab) == [good.order_id]


@pytest.mark.parametrize("lab_overrides", [{"MAX_RECORD_BYTES": 2048}])
async def test_oversized_record_is_rejected_and_dead_lettered(lab, dev_keys):
    assert lab.settings.max_record_bytes == 2048
    o = order(dev_keys.institution_id)
    big = body_of(o) + b" " * 2048  # still valid JSON, validly signed: only too big
    rec = signed_raw(lab.terminal.signer, LabOrderPlaced.CE_TYPE, big, key=o.order_id)
    meta = await lab.terminal.send_raw(rec.key, rec.value, rec.headers)

    [answer] = await lab.events.wait_for(rejection_for(rec.ce_id))
    body = payload(answer)
    assert body["reason"] == "oversized"
    assert body["fields"] == [{"field": "value", "code": "max_bytes"}]
    assert answer.key.decode() == o.order_id

    [letter] = await lab.dlq.wait_for(lambda r: header(r, "ce_id") == rec.ce_id)
    assert_dead_letter(lab, letter, rec, meta, "oversized")

    good = await goes_on(lab, dev_keys, rec.key)  # a record under the limit still passes
    assert await order_ids(lab) == [good.order_id]


# --- decodable but refused: answered, not dead-lettered ------------------------------


async def test_schema_violation_names_paths_and_codes_only(lab, dev_keys):
    o = order(dev_keys.institution_id)
    data = o.model_dump(mode="json")
    data["priority"] = "asap-please"
    del data["visit_id"]
    data["tests"][1]["code"] = "k!secret"
    rec = signed_raw(lab.terminal.signer, LabOrderPlaced.CE_TYPE,
                     json.dumps(data).encode(), key=o.order_id)
    await lab.terminal.send_raw(rec.key, rec.value, rec.headers)

    [answer] = await lab.events.wait_for(rejection_for(rec.ce_id))
    body = payload(answer)
    assert body["reason"] == "schema_violation"
    assert sorted(body["fields"], key=lambda f: f["field"]) == [
        {"field": "priority", "code": "enum"},
        {"field": "tests.1.code", "code": "string_pattern_mismatch"},
        {"field": "visit_id", "code": "missing"},
    ]
    assert answer.key.decode() == o.order_id
    for value in (b"asap-please", b"k!secret", o.patient_ref.encode()):
        assert value not in answer.value  # names and codes, never values

    good = await goes_on(lab, dev_keys, rec.key)
    assert await order_ids(lab) == [good.order_id]
    await assert_not_dead_lettered(lab)


@pytest.mark.parametrize("forgery", ["another_key", "tampered_body"])
async def test_forged_signature_is_refused(lab, dev_keys, forgery):
    o = order(dev_keys.institution_id)
    if forgery == "another_key":  # the registered terminal's id, someone else's key
        rec = build_record(TerminalSigner.generate(dev_keys.terminal_id), o)
        value = rec.value
    else:  # signed by the terminal, then changed on the way
        rec = lab.terminal.record(o)
        value = rec.value.replace(b'"stat"', b'"routine"')
        assert value != rec.value
    await lab.terminal.send_raw(rec.key, value, rec.headers)

    # Its sender is not verified: no answer (it would go to the terminal the
    # record claims to be), no dead letter; kept for ops.
    good = await goes_on(lab, dev_keys, rec.key)
    assert await order_ids(lab) == [good.order_id]
    assert await unverified(lab) == [("bad_signature", dev_keys.terminal_id)]
    assert lab.events.of_type("intake.rejected.v1") == []
    await assert_not_dead_lettered(lab)


async def test_replayed_nonce_is_refused(lab, dev_keys):
    nonce = secrets.token_hex(16)
    first, second = order(dev_keys.institution_id), order(dev_keys.institution_id)
    await lab.terminal.publish(first, nonce=nonce)
    await lab.events.wait_for(lambda r: payload(r).get("order_id") == first.order_id)

    rec = lab.terminal.record(second, nonce=nonce)  # another record, the same nonce
    await lab.terminal.send_raw(rec.key, rec.value, rec.headers)
    [answer] = await lab.events.wait_for(rejection_for(rec.ce_id))
    body = payload(answer)
    assert body["reason"] == "replayed_nonce"
    assert body["fields"] == [{"field": "x-nonce", "code": "seen"}]
    assert nonce.encode() not in answer.value

    good = await goes_on(lab, dev_keys, rec.key)
    assert await order_ids(lab) == sorted([first.order_id, good.order_id])
    async with lab.pool.acquire() as conn:
        # The refused record left no inbox entry: its ce_id stays free.
        assert await conn.fetchval(
            "SELECT count(*) FROM processed_events WHERE ce_id = $1", rec.ce_id) == 0
    await assert_not_dead_lettered(lab)


@pytest.mark.parametrize("skew", [timedelta(minutes=-10), timedelta(minutes=10)],
                         ids=["past", "future"])
async def test_stale_timestamp_is_refused(lab, dev_keys, skew):
    o = order(dev_keys.institution_id)
    rec = lab.terminal.record(o, time=datetime.now(UTC) + skew)  # ce_time signed as sent
    await lab.terminal.send_raw(rec.key, rec.value, rec.headers)

    good = await goes_on(lab, dev_keys, rec.key)
    assert await order_ids(lab) == [good.order_id]
    assert await unverified(lab) == [("stale_timestamp", dev_keys.terminal_id)]
    assert lab.events.of_type("intake.rejected.v1") == []
    await assert_not_dead_lettered(lab)


async def test_unknown_terminal_is_refused(lab, dev_keys):
    rogue = TerminalSigner.generate("rogue-terminal-9")
    o = order(dev_keys.institution_id)
    rec = build_record(rogue, o)
    await lab.terminal.send_raw(rec.key, rec.value, rec.headers)

    good = await goes_on(lab, dev_keys, rec.key)
    assert await order_ids(lab) == [good.order_id]
    assert await unverified(lab) == [("unknown_terminal", "rogue-terminal-9")]
    assert lab.events.of_type("intake.rejected.v1") == []
    await assert_not_dead_lettered(lab)


async def test_many_bad_records_in_a_row_then_a_good_one(lab, dev_keys):
    """One partition (one key) holding every kind of bad record back to back:
    each from a verified sender is answered once, each from a sender not
    verified is kept for ops, and the good order behind them is accepted."""
    key = f"O-{secrets.token_hex(6)}"
    signer = lab.terminal.signer
    o = order(dev_keys.institution_id, order_id=key)
    sent = []

    def add(rec, value=None, headers=None):
        sent.append((rec, value if value is not None else rec.value,
                     headers if headers is not None else rec.headers))

    add(signed_raw(signer, LabOrderPlaced.CE_TYPE, b"{nope", key=key))
    add(signed_raw(signer, LabOrderPlaced.CE_TYPE, b"[]", key=key))
    add(signed_raw(signer, "yigongti.lab.order.teleported.v1", body_of(o), key=key))
    tampered = lab.terminal.record(o)
    add(tampered, value=tampered.value.replace(b'"stat"', b'"urgent"'))
    add(lab.terminal.record(o, time=datetime.now(UTC) - timedelta(minutes=10)))
    add(build_record(TerminalSigner.generate("rogue-terminal-9"), o))
    no_id = lab.terminal.record(o)
    add(no_id, headers=without(no_id.headers, "ce_id"))
    for rec, value, headers in sent:
        await lab.terminal.send_raw(rec.key, value, headers)

    answers = await lab.events.wait_for(rejection_keyed(key), count=3)
    good = await goes_on(lab, dev_keys, key.encode())
    reasons = [payload(a)["reason"] for a in lab.events.of_type("intake.rejected.v1")]
    assert reasons == ["malformed_json", "schema_violation", "unknown_type"]
    assert [r for r, _ in await unverified(lab)] == [
        "bad_signature", "stale_timestamp", "unknown_terminal", "bad_signature"]
    [empty_array] = [payload(a) for a in answers if payload(a)["reason"] == "schema_violation"]
    assert empty_array["fields"] == [{"field": "", "code": "model_type"}]

    assert await order_ids(lab) == [good.order_id]
    letters = await read_dead_letters(lab.settings, "lab")
    assert [d.header("dlq-error") for d in letters] == ["malformed_json", "unknown_type"]

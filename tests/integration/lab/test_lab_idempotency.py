"""Exactly-once effects (DESIGN §4, §6; issue 2 "Checked by"): a record
delivered twice has one effect; the same ce_id with another payload is
flagged, not silently skipped; dead letters can be listed and replayed."""

from __future__ import annotations

import asyncio
import json
import time

from labflow import ce_type, header, order, partition_of, payload, rejection_for, signed_raw
from yigongti_kit import dlq

ACCEPTED = "order.accepted.v1"


def accepted_for(order_id: str):
    return lambda r: ce_type(r).endswith(ACCEPTED) and payload(r)["order_id"] == order_id


async def wait_until(condition, timeout: float = 20.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_the_same_record_delivered_twice_has_one_effect(lab, dev_keys):
    o = order(dev_keys.institution_id)
    rec = lab.terminal.record(o)
    for _ in range(2):  # identical bytes and headers, as a producer retry would leave them
        await lab.terminal.send_raw(rec.key, rec.value, rec.headers)
    # Both copies are on one partition (one key); a later order on the same key
    # is handled after both, so once it is accepted the duplicate was seen too.
    later = order(dev_keys.institution_id)
    after = lab.terminal.record(later)
    await lab.terminal.send_raw(after.key, after.value, after.headers,
                                partition=partition_of(o.order_id))
    await lab.events.wait_for(accepted_for(later.order_id))
    await wait_until(lambda: lab.runtime.consumer.processed >= 3)
    assert lab.runtime.consumer.processed == 3  # duplicate handled (as a no-op), not refused

    assert len([r for r in lab.events.records if accepted_for(o.order_id)(r)]) == 1
    assert not [r for r in lab.events.records if ce_type(r).endswith("intake.rejected.v1")]
    async with lab.pool.acquire() as conn:
        assert await conn.fetchval(
            "SELECT count(*) FROM orders WHERE order_id = $1", o.order_id) == 1
        assert await conn.fetchval(
            "SELECT count(*) FROM order_tests WHERE order_id = $1", o.order_id) == 2
        assert await conn.fetchval(
            "SELECT count(*) FROM processed_events WHERE ce_id = $1", rec.ce_id) == 1
        assert await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE aggregateid = $1", o.order_id) == 1
        assert await conn.fetchval("SELECT count(*) FROM inbox_conflicts") == 0


async def test_an_accepted_record_sent_again_late_is_a_duplicate_not_a_rejection(lab, dev_keys):
    """A terminal re-sends a record the lab already applied, after the time
    window (broker time 10 min later) and after its terminal was withdrawn:
    it is a duplicate, not a stale or unknown-terminal refusal contradicting
    the acceptance the terminal may have missed."""
    o = order(dev_keys.institution_id)
    rec = lab.terminal.record(o)
    await lab.terminal.send_raw(rec.key, rec.value, rec.headers)
    await lab.events.wait_for(accepted_for(o.order_id))
    async with lab.pool.acquire() as conn:
        await conn.execute("UPDATE terminals SET active = false")
    late_ms = int((time.time() + 600) * 1000)
    await lab.terminal.send_raw(rec.key, rec.value, rec.headers, timestamp_ms=late_ms)
    await wait_until(lambda: lab.runtime.consumer.processed >= 2)
    # Nothing answers the copy (the relay has published everything committed).
    async with lab.pool.acquire() as conn:
        await wait_until_async(lambda: conn.fetchval(
            "SELECT count(*) = 0 FROM outbox WHERE sent_at IS NULL"))
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 1
    assert not [r for r in lab.events.records if rejection_for(rec.ce_id)(r)]


async def wait_until_async(condition, timeout: float = 20.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_the_same_ce_id_with_another_payload_is_flagged(lab, dev_keys):
    first = order(dev_keys.institution_id)
    ce_id = await lab.terminal.publish(first)
    await lab.events.wait_for(accepted_for(first.order_id))
    async with lab.pool.acquire() as conn:
        before = dict(await conn.fetchrow("SELECT * FROM orders WHERE order_id = $1",
                                          first.order_id))

    # Validly signed (fresh nonce), same ce_id, different order.
    other = order(dev_keys.institution_id, tests=("GLU",))
    rec = lab.terminal.record(other, ce_id=ce_id)
    meta = await lab.terminal.send_raw(rec.key, rec.value, rec.headers)

    [answer] = await lab.events.wait_for(rejection_for(ce_id))
    body = payload(answer)
    assert body["reason"] == "duplicate_id_conflict"
    assert body["fields"] == [{"field": "ce_id", "code": "reused"}]
    assert answer.key.decode() == other.order_id
    async with lab.pool.acquire() as conn:
        [conflict] = await conn.fetch("SELECT * FROM inbox_conflicts")
        assert conflict["ce_id"] == ce_id
        assert conflict["ce_source"] == lab.terminal.signer.source
        assert conflict["ce_type"] == other.CE_TYPE
        assert conflict["first_hash"] != conflict["other_hash"]
        assert (conflict["topic"], conflict["kafka_partition"], conflict["kafka_offset"]) == (
            lab.topics["lab.intake.v1"], meta.partition, meta.offset)
        # The first order's effect is unchanged; the second has none.
        assert dict(await conn.fetchrow("SELECT * FROM orders WHERE order_id = $1",
                                        first.order_id)) == before
        assert await conn.fetchval(
            "SELECT count(*) FROM orders WHERE order_id = $1", other.order_id) == 0
        assert await conn.fetchval(
            "SELECT count(*) FROM processed_events WHERE ce_id = $1", ce_id) == 1
    assert len([r for r in lab.events.records if accepted_for(first.order_id)(r)]) == 1


async def test_a_conflict_sent_twice_is_flagged_each_time_and_never_applied(lab, dev_keys):
    """A conflicting record published twice (two offsets): both copies are
    flagged and answered; neither is mistaken for a harmless duplicate."""
    first = order(dev_keys.institution_id)
    ce_id = await lab.terminal.publish(first)
    await lab.events.wait_for(accepted_for(first.order_id))
    rec = lab.terminal.record(order(dev_keys.institution_id), ce_id=ce_id)
    for _ in range(2):
        await lab.terminal.send_raw(rec.key, rec.value, rec.headers)
    await lab.events.wait_for(rejection_for(ce_id), count=2)
    async with lab.pool.acquire() as conn:
        # Each copy sits at its own offset: each is flagged and answered, and
        # neither has an effect.
        assert await conn.fetchval("SELECT count(*) FROM inbox_conflicts") == 2
        assert await conn.fetchval("SELECT count(*) FROM orders") == 1


async def test_dead_letters_are_listed_and_replayed(lab, dev_keys, kit_env, monkeypatch, capsys):
    o = order(dev_keys.institution_id)
    rec = signed_raw(lab.terminal.signer, "yigongti.lab.order.teleported.v1",
                     json.dumps(o.model_dump(mode="json")).encode(), key=o.order_id)
    meta = await lab.terminal.send_raw(rec.key, rec.value, rec.headers)
    await lab.dlq.wait_for(lambda r: header(r, "ce_id") == rec.ce_id)

    [letter] = await dlq.read_dead_letters(lab.settings, "lab")
    assert letter.header("dlq-error") == "unknown_type"
    assert letter.header("dlq-source-offset") == str(meta.offset)
    assert letter.value == rec.value

    # The command, with the environment of this test's service (topic prefix…).
    env = kit_env("lab")
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BROKER_KIND", "TOPIC_PREFIX", "SERVICE_NAME",
                 "DATABASE_URL", "DB_SCHEMA"):
        monkeypatch.setenv(name, env[name])
    capsys.readouterr()
    assert await asyncio.to_thread(
        dlq.main, ["replay", "--service", "lab", "--offset", f"0:{letter.offset}"]) == 0
    # Handed back to the lab, which still does not know the type: refused for
    # the same reason, and neither a second dead letter nor a second answer.
    assert capsys.readouterr().out.strip() == f"0:{letter.offset}\tunknown_type"
    if meta.timestamp != -1:
        assert letter.timestamp_ms == meta.timestamp
    async with lab.pool.acquire() as conn:
        assert await conn.fetchval("SELECT replay_outcome FROM dead_letters") == "unknown_type"
    await asyncio.sleep(0.3)
    assert len(lab.dlq.records) == 1
    assert len(lab.events.of_type("intake.rejected.v1")) == 1

    letters = await dlq.read_dead_letters(lab.settings, "lab")
    assert [d.header("dlq-error") for d in letters] == ["unknown_type"]
    capsys.readouterr()
    assert await asyncio.to_thread(dlq.main, ["list", "--service", "lab"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2  # a heading and the dead letter
    assert all("unknown_type" in line for line in listed[1:])
    assert o.patient_ref not in "\n".join(listed)  # no payloads in the output
    async with lab.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM orders") == 0

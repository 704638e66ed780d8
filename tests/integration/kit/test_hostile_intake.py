"""Hostile intake from a foreign client, against the real broker and database
(issue 8 items 4, 7, 8; issue 9 faults 1, 2, 4, 6, 9): every record is answered
exactly once or, when its sender is not verified, kept for ops without an
answer; nothing stops the intake, nothing is logged with a value."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from harness_proxy import TcpProxy
from kitflow import count
from labflow import ce_type, header, order, partition_of, payload, rejection_for, signed_raw
from yigongti_contracts.lab.v1 import LabOrderPlaced
from yigongti_kit.auth import issue_token
from yigongti_kit.dlq import read_dead_letters
from yigongti_kit.intake_auth import TerminalSigner


def body_of(o: LabOrderPlaced) -> bytes:
    return json.dumps(o.model_dump(mode="json"), separators=(",", ":")).encode()


async def accepted(lab, o: LabOrderPlaced) -> None:
    await lab.events.wait_for(lambda r: ce_type(r).endswith("order.accepted.v1")
                              and payload(r)["order_id"] == o.order_id)


async def goes_on(lab, dev_keys, key: bytes) -> None:
    """A good order on the same partition behind the hostile record is accepted
    (its own key, sent to the partition `key` goes to)."""
    good = order(dev_keys.institution_id)
    rec = lab.terminal.record(good)
    await lab.terminal.send_raw(rec.key, rec.value, rec.headers,
                                partition=partition_of(key))
    await accepted(lab, good)


def no_value_logged(caplog, *values: str) -> None:
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    for value in values:
        assert value not in text


# --- unverified senders: no answer, no dead letter, kept for ops ---------------------


@pytest.mark.parametrize("forgery", ["bad_signature", "unknown_terminal", "unsigned",
                                     "source_mismatch"])
async def test_unverified_sender_gets_no_answer_and_never_reaches_the_victims_feed(
    start_lab, dev_keys, forgery,
):
    lab = await start_lab()
    victim = dev_keys.signer()  # the clinic's real terminal
    real = order(dev_keys.institution_id)
    await lab.terminal.publish(real)
    await accepted(lab, real)
    forged_order = order(dev_keys.institution_id, order_id=real.order_id)
    if forgery == "bad_signature":  # the victim's id and source, someone else's key
        rec = lab.terminal.record(forged_order)
        forger = TerminalSigner.generate(victim.terminal_id)
        rec = type(rec)(rec.key, rec.value, forger.sign(rec.headers, rec.value), rec.ce_id)
    elif forgery == "unknown_terminal":
        from yigongti_kit.terminal import build_record
        rec = build_record(TerminalSigner.generate("rogue-9"), forged_order)
    elif forgery == "unsigned":
        rec = lab.terminal.record(forged_order)
        rec = type(rec)(rec.key, rec.value,
                        [h for h in rec.headers if not h[0].startswith("x-")], rec.ce_id)
    else:  # signed by a registered terminal, claiming another's source
        rec = lab.terminal.record(forged_order)
        rec = type(rec)(rec.key, rec.value,
                        [(k, b"/terminals/someone-else" if k == "ce_source" else v)
                         for k, v in rec.headers], rec.ce_id)
    await lab.terminal.send_raw(rec.key, rec.value, rec.headers)
    await goes_on(lab, dev_keys, rec.key)

    async with lab.runtime.pool.acquire() as conn:
        kept = await conn.fetch("SELECT * FROM unverified_intake")
        sequence = await conn.fetchval(
            "SELECT last FROM outbox_sequence WHERE aggregateid = $1", real.order_id)
    assert [r["reason"] for r in kept] == [
        {"bad_signature": "bad_signature", "unknown_terminal": "unknown_terminal",
         "unsigned": "missing_signature", "source_mismatch": "source_mismatch"}[forgery]]
    assert lab.events.of_type("intake.rejected.v1") == []  # no answer to anyone
    assert await read_dead_letters(lab.settings, "lab") == []
    assert sequence == 1  # the victim's order: only its own acceptance
    token = issue_token(dev_keys.auth_private_pem, user="u-1",
                        institution=dev_keys.institution_id, roles=["clinician"], audience="lab")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=lab.runtime.app),
                                 base_url="http://lab",
                                 headers={"Authorization": f"Bearer {token}"}) as clinic:
        items = (await clinic.get("/feed")).json()["items"]
    assert "intake.rejected" not in " ".join(i["type"] for i in items)


async def test_nul_in_an_unauthenticated_terminal_id_is_kept_for_ops_without_a_traceback(
    start_lab, dev_keys, caplog,
):
    lab = await start_lab()
    rec = lab.terminal.record(order(dev_keys.institution_id))
    headers = [(k, b"T-\x00-evil" if k == "x-terminal-id" else v) for k, v in rec.headers]
    with caplog.at_level(logging.INFO):
        await lab.terminal.send_raw(rec.key, rec.value, headers)
        await goes_on(lab, dev_keys, rec.key)
    async with lab.runtime.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM unverified_intake")
    assert row["reason"] == "bad_signature" and "\x00" not in (row["claimed_terminal"] or "")
    assert not [r for r in caplog.records if r.exc_info]  # no handler-bug path


async def test_far_future_ce_time_does_not_stop_the_intake_even_after_a_restart(
    start_lab, dev_keys,
):
    lab = await start_lab()
    o = order(dev_keys.institution_id)
    for value in (b"9999-12-31T23:59:59-01:00", b"0001-01-01T00:00:00+01:00"):
        rec = lab.terminal.record(o)
        headers = [(k, value if k == "ce_time" else v) for k, v in rec.headers]
        await lab.terminal.send_raw(rec.key, rec.value, headers)
    await goes_on(lab, dev_keys, o.order_id.encode())
    assert "consumer" not in lab.runtime.health.failing()


# --- verified senders: answered exactly once ------------------------------------------


async def test_nul_in_a_signed_ce_id_is_refused_with_a_reason_not_a_processing_error(
    start_lab, dev_keys, caplog,
):
    lab = await start_lab()
    o = order(dev_keys.institution_id)
    rec = signed_raw(lab.terminal.signer, LabOrderPlaced.CE_TYPE, body_of(o), key=o.order_id,
                     ce_id="id\x00with-nul")
    with caplog.at_level(logging.INFO):
        await lab.terminal.send_raw(rec.key, rec.value, rec.headers)
        [answer] = await lab.events.wait_for(
            lambda r: ce_type(r).endswith("intake.rejected.v1") and r.key == rec.key)
    assert payload(answer)["reason"] == "bad_header"
    assert payload(answer)["fields"] == [{"field": "ce_id", "code": "bad_header"}]
    assert not [r for r in caplog.records if r.exc_info]
    await goes_on(lab, dev_keys, rec.key)


async def test_an_attacker_chosen_header_name_gets_one_answer_and_is_never_logged(
    start_lab, dev_keys, caplog,
):
    lab = await start_lab()
    o = order(dev_keys.institution_id)
    rec = lab.terminal.record(o)
    evil = "<script>alert(1)</script>"
    headers = list(rec.headers) + [(evil, b"1"), (evil, b"2")]  # repeated: refused
    with caplog.at_level(logging.INFO):
        await lab.terminal.send_raw(rec.key, rec.value, headers)
        await lab.events.wait_for(rejection_for(rec.ce_id))
        await goes_on(lab, dev_keys, rec.key)
    await asyncio.sleep(0.5)
    answers = [r for r in lab.events.of_type("intake.rejected.v1")
               if payload(r)["rejected_id"] == rec.ce_id]
    assert len(answers) == 1
    assert payload(answers[0])["fields"] == [{"field": "*", "code": "duplicate_header"}]
    letters = [d for d in await read_dead_letters(lab.settings, "lab")]
    assert len(letters) == 1
    no_value_logged(caplog, evil)


@pytest.mark.parametrize("problem", ["boolean_age", "numeric_string", "duplicate_key",
                                     "key_mismatch", "date_9999"])
async def test_lax_or_ambiguous_records_are_refused(start_lab, dev_keys, problem):
    lab = await start_lab()
    o = order(dev_keys.institution_id)
    data = o.model_dump(mode="json")
    key = o.order_id
    if problem == "boolean_age":
        data["age"]["value"] = True
    elif problem == "numeric_string":
        data["age"]["value"] = "80"
    elif problem == "date_9999":
        data["ordered_at"] = "9999-12-31T23:59:59-01:00"
    elif problem == "key_mismatch":
        key = "ORDER-OF-SOMEONE-ELSE"
    text = json.dumps(data)
    if problem == "duplicate_key":
        text = text[:-1] + ', "order_id": "ORDER-2"}'
    rec = signed_raw(lab.terminal.signer, LabOrderPlaced.CE_TYPE, text.encode(), key=key)
    await lab.terminal.send_raw(rec.key, rec.value, rec.headers)
    [answer] = await lab.events.wait_for(rejection_for(rec.ce_id))
    expected = {
        "boolean_age": ("schema_violation", {"field": "age.value", "code": "int_type"}),
        "numeric_string": ("schema_violation", {"field": "age.value", "code": "int_type"}),
        "date_9999": ("schema_violation", None),
        "duplicate_key": ("schema_violation", {"field": "order_id", "code": "duplicate_key"}),
        "key_mismatch": ("key_mismatch", {"field": "order_id", "code": "not_the_record_key"}),
    }[problem]
    assert payload(answer)["reason"] == expected[0]
    if expected[1] is not None:
        assert expected[1] in payload(answer)["fields"]
    async with lab.runtime.pool.acquire() as conn:
        assert await count(conn, "SELECT count(*) FROM orders") == 0
    await goes_on(lab, dev_keys, rec.key)


async def test_a_record_of_about_one_mebibyte_is_answered_and_its_partition_moves_on(
    start_lab, dev_keys, kafka_bootstrap, broker_kind,
):
    import harness
    from aiokafka import AIOKafkaProducer

    lab = await start_lab()
    producer = AIOKafkaProducer(**{**harness.client_kwargs(kafka_bootstrap, "producer",
                                                           broker_kind),
                                   "max_request_size": 4 * 1024 * 1024})
    await producer.start()
    try:
        o = order(dev_keys.institution_id)
        big = body_of(o)[:-1] + b', "padding": "' + b"x" * 1_100_000 + b'"}'
        rec = signed_raw(lab.terminal.signer, LabOrderPlaced.CE_TYPE, big, key=o.order_id)
        meta = await producer.send_and_wait(lab.topics["lab.intake.v1"], key=rec.key,
                                            value=rec.value, headers=rec.headers)
    finally:
        await producer.stop()
    [answer] = await lab.events.wait_for(rejection_for(rec.ce_id), timeout=30)
    assert payload(answer)["reason"] == "oversized"
    [letter] = await lab.dlq.wait_for(lambda r: header(r, "ce_id") == rec.ce_id, timeout=30)
    assert header(letter, "dlq-value-bytes") == str(len(big))
    assert len(letter.value) < len(big)
    assert header(letter, "dlq-source-offset") == str(meta.offset)
    await goes_on(lab, dev_keys, rec.key)
    assert "consumer" not in lab.runtime.health.failing()


# --- freshness does not rest on a time the sender chooses -----------------------------


async def test_a_record_signed_a_day_ago_and_sent_with_a_day_old_timestamp_is_refused(
    start_lab, dev_keys,
):
    lab = await start_lab()
    o = order(dev_keys.institution_id)
    day_ago = datetime.now(UTC) - timedelta(days=1)
    rec = lab.terminal.record(o, time=day_ago)
    await lab.terminal.send_raw(rec.key, rec.value, rec.headers,
                                timestamp_ms=int(day_ago.timestamp() * 1000))
    await goes_on(lab, dev_keys, rec.key)
    async with lab.runtime.pool.acquire() as conn:
        assert await conn.fetchval("SELECT reason FROM unverified_intake") == "stale_timestamp"
        assert await conn.fetchval(
            "SELECT count(*) FROM orders WHERE order_id = $1", o.order_id) == 0


@pytest.mark.timeout(180)
async def test_a_record_produced_fresh_during_a_sixty_second_database_outage_is_accepted(
    start_lab, dev_keys, database_url,
):
    proxy = TcpProxy.for_url(database_url)
    await proxy.start()
    try:
        # A skew allowance far shorter than the outage: only the rule can save it.
        lab = await start_lab(DATABASE_URL=proxy.url_through(database_url),
                              INTAKE_MAX_SKEW_S=15)
        first = order(dev_keys.institution_id)
        await lab.terminal.publish(first)
        await accepted(lab, first)
        await proxy.cut()
        cut_at = time.monotonic()
        during = order(dev_keys.institution_id)
        await asyncio.sleep(5)
        await lab.terminal.publish(during)  # signed and sent now, fresh
        await asyncio.sleep(60 - (time.monotonic() - cut_at))
        await proxy.restore()
        await accepted(lab, during)
        async with lab.runtime.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM unverified_intake") == 0
    finally:
        await proxy.close()


# --- a dead letter of signed intake is replayable hours later ---------------------------


async def test_a_dead_letter_older_than_the_skew_is_replayed_but_the_same_record_resent_is_not(
    start_lab, dev_keys, monkeypatch,
):
    from yigongti_kit import dlq
    from yigongti_lab import handlers
    from yigongti_lab.app import spec

    lab = await start_lab(INTAKE_MAX_SKEW_S=2)
    original = handlers.HANDLERS[LabOrderPlaced.CE_TYPE]

    async def broken(intake):  # a handler bug, fixed later
        raise RuntimeError("bug")

    monkeypatch.setitem(lab.runtime.consumer.handlers, LabOrderPlaced.CE_TYPE, broken)
    replayed, resent = order(dev_keys.institution_id), order(dev_keys.institution_id)
    records = [lab.terminal.record(o) for o in (replayed, resent)]
    for rec in records:
        await lab.terminal.send_raw(rec.key, rec.value, rec.headers)
        [answer] = await lab.events.wait_for(rejection_for(rec.ce_id), timeout=30)
        assert payload(answer)["reason"] == "processing_error"
        await lab.dlq.wait_for(lambda r, rec=rec: header(r, "ce_id") == rec.ce_id)
    monkeypatch.setitem(lab.runtime.consumer.handlers, LabOrderPlaced.CE_TYPE, original)
    await asyncio.sleep(3)  # the records are now older than INTAKE_MAX_SKEW_S

    letters = [d for d in await dlq.read_dead_letters(lab.settings, "lab")
               if d.header("ce_id") == records[0].ce_id]
    assert await dlq.replay(lab.settings, spec(), letters) == ["applied"]
    await accepted(lab, replayed)
    # The other record sent again by its terminal (or anyone): stale now, refused.
    second = records[1]
    await lab.terminal.send_raw(second.key, second.value, second.headers)
    await goes_on(lab, dev_keys, second.key)
    async with lab.runtime.pool.acquire() as conn:
        assert await conn.fetchval(
            "SELECT count(*) FROM orders WHERE order_id = $1", resent.order_id) == 0
        assert await conn.fetchval("SELECT reason FROM unverified_intake") == "stale_timestamp"

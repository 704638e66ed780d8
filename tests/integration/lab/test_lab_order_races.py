"""Technical confirmation racing the intake handlers (issue 8 item 10), across
two service processes on one database, so whatever keeps them apart must live
in PostgreSQL.

The intake handlers run in this test's process (the `lab` fixture: consumer,
relay, HTTP); the technologist's confirmation is sent to a second lab process
(a subprocess on the same database and schema, consuming a topic nobody
writes to, so it handles no intake). The confirmation is held open inside its
transaction: the test holds the tube's test rows, which the confirmation
updates after its first statement, from a connection of its own. While the
confirmation waits there, the racing record arrives; once it waits too, the
test lets go. The confirmation began first, so it must win: the racing record
sees the confirmed test and is refused, and the report holds one value.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from labflow import ce_type, payload, rejection_for
from labjourney import (
    LAB_CENTRE,
    analyser_results,
    confirm,
    fetchval,
    is_,
    lis,
    obs,
    ordered_tube,
    physician,
    receive,
    report_results,
    seen,
    until,
    verify,
)
from yigongti_contracts.lab.codes import CancellationReason
from yigongti_contracts.lab.v1 import LabOrderCancelled
from yigongti_contracts.topics import topic_name, topics_for
from yigongti_deploy.embedded import create_topics
from yigongti_kit.auth import issue_token


@pytest.fixture
async def confirmer(lab, kit_env, service_process, kafka_bootstrap, dev_keys):
    """An HTTP client of a second lab process on the same database and schema.
    Its topics have a prefix of their own, so it takes no intake (the `lab`
    fixture's process handles all of it) and, started after it, never leads
    the relay."""
    prefix = f"c{uuid.uuid4().hex[:8]}_"
    await create_topics(kafka_bootstrap, [(topic_name(t.name, prefix), t.partitions)
                                          for t in topics_for("lab")])
    env = kit_env("lab", TOPIC_PREFIX=prefix, CONSUMER_GROUP=f"{prefix}lab")
    process = await service_process("lab", env)
    token = issue_token(dev_keys.auth_private_pem, user="tech-8", institution=LAB_CENTRE,
                        roles=["lab_technologist"], audience="lab")
    async with httpx.AsyncClient(base_url=process.url, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


async def _waiting(lab) -> int:
    """Sessions of this test's lab (both processes) waiting for a lock."""
    return await fetchval(
        lab, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
             " AND application_name = current_setting('application_name')")


async def _waiting_at_least(lab, n: int) -> bool:
    return await _waiting(lab) >= n


@contextlib.asynccontextmanager
async def holding_the_tests_of(lab, barcode: str):
    """The tube's order_tests rows locked from the test's own connection."""
    async with lab.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("SELECT 1 FROM order_tests WHERE barcode = $1 FOR UPDATE",
                               barcode)
            yield
        finally:
            await tx.rollback()


async def _answer(lab, ce_id: str, applied) -> dict:
    """The record's IntakeRejected, or else the event (`applied`, a predicate)
    that applying it produces."""
    [record, *_] = await lab.events.wait_for(
        lambda r: rejection_for(ce_id)(r) or applied(r), timeout=30)
    return {"type": ce_type(record), **payload(record)}


async def _report(lab, dev_keys, order_id: str) -> list[dict]:
    async with physician(lab, dev_keys) as doctor:
        report = (await doctor.get(f"/orders/{order_id}/report")).json()
    return report["observations"]


async def test_a_cancel_racing_a_held_confirmation_is_refused_once_it_commits(
        lab, dev_keys, confirmer):
    o, t = await ordered_tube(lab, dev_keys, ("K",))
    await receive(lab, dev_keys, t.barcode)
    await report_results(lab, dev_keys, t.barcode, obs("K", "4.2"))

    async with holding_the_tests_of(lab, t.barcode):
        confirming = asyncio.create_task(confirmer.post(f"/specimens/{t.barcode}/confirm"))
        await until(lambda: _waiting(lab), what="the confirmation held open")
        assert not confirming.done(), confirming.result().text
        cancel = await lab.terminal.publish(LabOrderCancelled(
            order_id=o.order_id, tests=("K",), reason=CancellationReason.clinical_change,
            cancelled_by="doc-17", cancelled_at=datetime.now(UTC)))
        await until(lambda: _waiting_at_least(lab, 2), what="the cancel waiting too")
        assert not confirming.done(), confirming.result().text
    confirmed = await asyncio.wait_for(confirming, 30)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["confirmed"] == [f"{t.barcode}.K.1"]

    answer = await _answer(lab, cancel, is_("tests.cancelled.v1", order_id=o.order_id))
    assert answer["type"].endswith("intake.rejected.v1"), answer
    assert answer["reason"] == "test_already_resulted"
    assert await fetchval(lab, "SELECT status FROM order_tests WHERE order_id = $1",
                          o.order_id) == "confirmed"
    assert not seen(lab, "charges.reversed.v1", order_id=o.order_id)

    await verify(lab, dev_keys, o.order_id)
    assert [(r["code"], r["value"], r["status"]) for r in await _report(
        lab, dev_keys, o.order_id)] == [("K", "4.2", "verified")]


async def test_a_rerun_racing_a_held_confirmation_is_refused_once_it_commits(
        lab, dev_keys, confirmer):
    # Troponin not resulted yet: the tube stays "received" when K is confirmed.
    o, t = await ordered_tube(lab, dev_keys, ("K", "CTNI"))
    await receive(lab, dev_keys, t.barcode)
    await report_results(lab, dev_keys, t.barcode, obs("K", "4.2"))

    async with holding_the_tests_of(lab, t.barcode):
        confirming = asyncio.create_task(confirmer.post(f"/specimens/{t.barcode}/confirm"))
        await until(lambda: _waiting(lab), what="the confirmation held open")
        assert not confirming.done(), confirming.result().text
        rerun = await lis(lab, dev_keys).publish(analyser_results(t.barcode, obs("K", "4.6")))
        assert len(seen(lab, "results.reported.v1", barcode=t.barcode)) == 1
        await until(lambda: _waiting_at_least(lab, 2), what="the re-run waiting too")
        assert not confirming.done(), confirming.result().text
    confirmed = await asyncio.wait_for(confirming, 30)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["confirmed"] == [f"{t.barcode}.K.1"]

    # The re-run stored beside the confirmed line would be reported as a second run.
    answer = await _answer(lab, rerun, lambda r: is_("results.reported.v1", barcode=t.barcode)(r)
                           and payload(r)["observations"][0]["value"] == "4.6")
    assert answer["type"].endswith("intake.rejected.v1"), answer
    assert answer["reason"] == "already_confirmed"
    assert await fetchval(lab, "SELECT count(*) FROM results WHERE barcode = $1",
                          t.barcode) == 1

    await report_results(lab, dev_keys, t.barcode, obs("CTNI", "5"))
    await confirm(lab, dev_keys, t.barcode)
    await verify(lab, dev_keys, o.order_id)
    assert [(r["code"], r["value"], r["status"]) for r in await _report(
        lab, dev_keys, o.order_id)] == [("CTNI", "5", "verified"), ("K", "4.2", "verified")]


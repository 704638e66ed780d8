"""Outbox rows the broker refused for good are listed and can be resent once
the cause is removed, keeping their ce_id (issue 8 item 5)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from kitflow import wait_until
from labflow import header
from yigongti_contracts.common import FieldError, IntakeRejected
from yigongti_kit import outbox, outbox_command


def big_event(key: str) -> IntakeRejected:
    return IntakeRejected(
        key=key, service="lab", reason="schema_violation", rejected_at=datetime.now(UTC),
        fields=tuple(FieldError(field=f"tests.{i}.override_reason_{'x' * 40}", code="enum")
                     for i in range(50)))


async def test_a_refused_row_is_listed_and_resent_with_its_ce_id_once_the_limit_is_raised(
    start_lab, kit_settings, capsys,
):
    lab = await start_lab(KAFKA_MAX_REQUEST_BYTES=2048)
    async with lab.runtime.pool.acquire() as conn, conn.transaction():
        ce_id = await outbox.add_event(conn, big_event("ORD-BIG"), topic="lab.events.v1",
                                       source="/yigongti/lab", aggregatetype="lab_order")

    async def refused() -> bool:
        async with lab.runtime.pool.acquire() as conn:
            return bool(await conn.fetchval(
                "SELECT refused_at IS NOT NULL FROM outbox WHERE id = $1::uuid", ce_id))

    await wait_until(refused, what="the row set aside")
    small = kit_settings("lab", KAFKA_MAX_REQUEST_BYTES=2048)
    rows = await outbox_command.list_refused(small)
    assert [(r["ce_id"], r["type"], r["error"]) for r in rows] == [
        (ce_id, IntakeRejected.CE_TYPE, "MessageSizeTooLargeError")]

    # The cause is still there: refused, nothing changes.
    outcome = await outbox_command.resend(small, [ce_id])
    assert outcome[ce_id].startswith("still_too_large")

    # The limit raised and the service restarted with it.
    await lab.runtime.stop()
    lab = await start_lab(KAFKA_MAX_REQUEST_BYTES=1_000_000)
    raised = kit_settings("lab", KAFKA_MAX_REQUEST_BYTES=1_000_000)
    outcome = await outbox_command.resend(raised, [ce_id], wait_s=20)
    [record] = await lab.events.wait_for(lambda r: header(r, "ce_id") == ce_id)
    async with lab.runtime.pool.acquire() as conn:
        aggseq = await conn.fetchval("SELECT sequence FROM outbox WHERE id = $1::uuid", ce_id)
    assert outcome[ce_id] == f"sent with aggseq {aggseq}"
    assert header(record, "ce_aggseq") == str(aggseq)
    assert await outbox_command.list_refused(raised) == []
    await asyncio.sleep(0)

"""`outbox_cte` stores events as `add_events` does, inside a statement the
caller sends anyway (settlement's hot path), and the relay publishes them in
order with the same headers."""

from __future__ import annotations

from datetime import UTC, datetime

from labflow import header
from yigongti_contracts.common import FieldError, IntakeRejected
from yigongti_kit import outbox


def rejected(key: str) -> IntakeRejected:
    return IntakeRejected(key=key, service="lab", reason="schema_violation",
                          rejected_at=datetime.now(UTC),
                          fields=(FieldError(field="tests", code="enum"),))


async def test_events_stored_by_the_cte_are_published_in_order_like_add_events(start_lab):
    lab = await start_lab()
    events = [(rejected("ORD-CTE"), None) for _ in range(3)]  # one key: one partition, in order
    arguments = outbox.outbox_arguments(events, topic="lab.events.v1", source="/yigongti/lab",
                                        aggregatetype="lab_order")
    async with lab.runtime.pool.acquire() as conn, conn.transaction():
        answer = await conn.fetchval(
            f"WITH {outbox.outbox_cte(2)} SELECT $1::text", "rode along", *arguments)
        ce_ids = await outbox.add_events(conn, [(rejected("ORD-CTE"), None)],
                                         topic="lab.events.v1", source="/yigongti/lab",
                                         aggregatetype="lab_order")
    assert answer == "rode along"
    expected = [str(i) for i in arguments[0]] + ce_ids
    records = await lab.events.wait_for(
        lambda r: header(r, "ce_id") in expected, count=4)
    assert [header(r, "ce_id") for r in records] == expected
    assert [header(r, "ce_type") for r in records] == [IntakeRejected.CE_TYPE] * 4
    assert [r.key for r in records] == [b"ORD-CTE"] * 4
    assert len({r.partition for r in records}) == 1

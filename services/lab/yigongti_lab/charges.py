"""Taking back a lab charge when its test is cancelled (posting is in results.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from yigongti_contracts.lab.codes import ReversalReason
from yigongti_contracts.lab.v1 import ChargesReversed

from .events import emit


async def reverse(conn: asyncpg.Connection, order_id: str, test_codes: list[str], *,
                  order_cancelled: bool) -> int:
    """ChargesReversed for every posted, not yet reversed charge of the tests."""
    reversed_at = datetime.now(UTC)
    rows = await conn.fetch(
        """UPDATE charges SET reversed_at = $3
           WHERE order_id = $1 AND test_code = ANY($2::text[]) AND reversed_at IS NULL
           RETURNING *""",
        order_id, test_codes, reversed_at,
    )
    if not rows:
        return 0
    order = await conn.fetchrow("SELECT * FROM orders WHERE order_id = $1", order_id)
    for row in sorted(rows, key=lambda r: r["test_code"]):
        await emit(conn, ChargesReversed(
            order_id=order_id, charge_id=row["charge_id"], visit_id=order["visit_id"],
            patient_ref=order["patient_ref"], billing_institution=order["ordering_institution"],
            item_code=row["item_code"], amount=row["amount"],
            reason=ReversalReason.order_cancelled if order_cancelled
            else ReversalReason.test_cancelled,
            reversed_at=reversed_at,
        ))
    return len(rows)

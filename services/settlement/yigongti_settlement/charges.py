"""Charges the lab and diagnosis services post to a visit (their ChargesPosted
and ChargesReversed, read through the kit's subscriptions: once each, by the
inbox). They wait on the visit for its settlement.

A charge posted after its visit was settled stays unsettled on the visit: the
visit's next settlement takes it, as a supplementary settlement naming the
earlier one (`supplementary_of`); the completed one is never changed. A
reversal of a charge not yet settled takes it off the visit; of a settled
one, it is recorded (reversed_at) and left to the office: the refund is a
reversal of that settlement and a new one (README, limits). A reversal that
arrives before its charge waits for it (parked).
"""

from __future__ import annotations

from yigongti_contracts.diagnosis import v1 as diagnosis_v1
from yigongti_contracts.lab import v1 as lab_v1
from yigongti_kit.batches import Delivery
from yigongti_kit.subscriptions import Park, Subscription, release

from . import locking, supervision
from .events import emit_all
from .handlers import credit_of
from .identity import supervision_flag


def _category(policy_category: str) -> str:
    return {"a": "a", "b": "b", "c": "c"}.get(policy_category, "out_of_catalogue")


def _on_posted(source: str):
    async def handle(delivery: Delivery) -> None:
        c = delivery.event
        conn = delivery.conn
        await locking.lock_visit(conn, c.visit_id)
        await conn.execute(
            """INSERT INTO visit_charges (source, charge_id, visit_id, patient_ref, institution,
                   item_code, category, quantity, unit_price, amount, posted_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
               ON CONFLICT (source, charge_id) DO NOTHING""",
            source, c.charge_id, c.visit_id, c.patient_ref, c.billing_institution, c.item_code,
            _category(str(c.policy_category.value if hasattr(c.policy_category, "value")
                          else c.policy_category)),
            c.quantity, c.unit_price, c.amount, c.posted_at)
        settled = await conn.fetchval(
            """SELECT settlement_id FROM settlements WHERE visit_id = $1
                 AND status = 'completed' ORDER BY seq DESC LIMIT 1""", c.visit_id)
        if settled is not None:
            await _note(delivery, supervision.LATE_CHARGE, source, settled)
        await release(conn, "charge", f"{source}:{c.charge_id}")

    return handle


def _on_reversed(source: str):
    async def handle(delivery: Delivery) -> None:
        c = delivery.event
        conn = delivery.conn
        await locking.lock_visit(conn, c.visit_id)
        done = await conn.fetchval(
            """UPDATE visit_charges SET reversed_at = $3
               WHERE source = $1 AND charge_id = $2 AND reversed_at IS NULL
               RETURNING coalesce(settled_in, '')""",
            source, c.charge_id, c.reversed_at)
        if done:  # it was settled: the refund is the office's (README), noted for audit
            await _note(delivery, supervision.LATE_REVERSAL, source, done)
        if done is None and not await conn.fetchval(
                "SELECT true FROM visit_charges WHERE source = $1 AND charge_id = $2",
                source, c.charge_id):
            raise Park("charge", f"{source}:{c.charge_id}")

    return handle


async def _note(delivery: Delivery, rule_id: str, source: str, settlement_id: str) -> None:
    c = delivery.event
    hit = supervision.late_charge(rule_id, charge_id=c.charge_id, source=source,
                                  amount=c.amount, settled_in=settlement_id)
    review = supervision.review(credit_of(c.billing_institution), [hit],
                                supervision.sample_point(f"{settlement_id}/{c.charge_id}"))
    flag = await supervision_flag(delivery.conn, settlement_id, c.patient_ref,
                                  c.billing_institution, hit, to_review=review.to_review)
    await emit_all(delivery.conn, [flag])


# No one waits on a posted charge (the counter settles minutes later; one that
# comes after its visit was settled opens a supplementary settlement), so these
# consumers poll four times a second, not a hundred: the service and the
# embedded broker spent a sixth of a core each on empty polls (bench_settlement).
CHARGES_FETCH_WAIT_MS = 250

SUBSCRIPTIONS = (
    Subscription("lab", {lab_v1.ChargesPosted.CE_TYPE: _on_posted("lab"),
                         lab_v1.ChargesReversed.CE_TYPE: _on_reversed("lab")},
                 fetch_max_wait_ms=CHARGES_FETCH_WAIT_MS),
    Subscription("diagnosis", {diagnosis_v1.ChargesPosted.CE_TYPE: _on_posted("diagnosis"),
                               diagnosis_v1.ChargesReversed.CE_TYPE: _on_reversed("diagnosis")},
                 fetch_max_wait_ms=CHARGES_FETCH_WAIT_MS),
)

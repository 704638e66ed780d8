"""The reader's wiring: a ServiceSpec with one subscription (the lab's charges)."""

from __future__ import annotations

from pathlib import Path

from yigongti_contracts.lab.v1 import ChargesPosted, ChargesReversed
from yigongti_kit.batches import Delivery
from yigongti_kit.service import ServiceSpec, run_service
from yigongti_kit.subscriptions import Park, Subscription, Unapplicable, release


async def on_posted(d: Delivery) -> None:
    if d.event.charge_id.startswith("BAD"):
        raise Unapplicable("unknown_charge_item", [("charge_id", "unknown")])
    await d.conn.execute("INSERT INTO charges_applied (charge_id, ce_id) VALUES ($1, $2)",
                         d.event.charge_id, d.envelope.id)
    await release(d.conn, "charge", d.event.charge_id)


async def on_reversed(d: Delivery) -> None:
    known = await d.conn.fetchval("SELECT true FROM charges_applied WHERE charge_id = $1",
                                  d.event.charge_id)
    if not known:
        raise Park("charge", d.event.charge_id)
    await d.conn.execute("INSERT INTO reversals_applied (charge_id, ce_id) VALUES ($1, $2)",
                         d.event.charge_id, d.envelope.id)


def spec() -> ServiceSpec:
    return ServiceSpec(
        name="settlement",
        aggregatetype="settlement",
        migrations=Path(__file__).parent / "migrations",
        handlers={},
        signed_intake=False,
        subscriptions=(Subscription("lab", {ChargesPosted.CE_TYPE: on_posted,
                                            ChargesReversed.CE_TYPE: on_reversed}),),
    )


def main() -> None:
    run_service(spec)

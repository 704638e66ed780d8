"""Charges (issue 3 §10): ChargesPosted exactly once per test when it is
resulted — however often the analyser sends or the broker delivers — with the
item and price of the regional table; ChargesReversed when a resulted test or
the order is cancelled, and a cancelled test's result goes no further."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from labflow import payload, rejection_for
from labjourney import (
    analyser_results,
    clinician,
    confirm,
    fetchval,
    lis,
    obs,
    one,
    ordered_tube,
    price_of,
    receive,
    report_results,
    seen,
    technologist,
    until,
    verify,
)
from yigongti_contracts.lab.codes import CancellationReason
from yigongti_contracts.lab.v1 import LabOrderCancelled
from yigongti_kit.terminal import build_record
from yigongti_lab import catalogue

POSTED = "charges.posted.v1"
REVERSED = "charges.reversed.v1"


def cancel(order_id: str, tests=None) -> LabOrderCancelled:
    return LabOrderCancelled(order_id=order_id, tests=tests,
                             reason=CancellationReason.clinical_change,
                             cancelled_by="doc-17", cancelled_at=datetime.now(UTC))


async def test_each_test_is_charged_once_however_often_its_results_come(lab, dev_keys):
    o, t = await ordered_tube(lab, dev_keys, ("K", "NA"))
    await receive(lab, dev_keys, t.barcode)
    await report_results(lab, dev_keys, t.barcode, obs("K", "4.1"))
    charge = await one(lab, POSTED, order_id=o.order_id, test_code="K")
    item = catalogue.price_item("K")
    assert charge["item_code"] == item.item and charge["policy_category"] == "a"
    assert Decimal(str(charge["unit_price"])) == Decimal(str(charge["amount"])) == price_of("K")
    assert charge["quantity"] == 1
    assert charge["price_table_id"] == catalogue.price_table("652325", datetime.now(UTC).year).id
    assert charge["visit_id"] == o.visit_id and charge["patient_ref"] == o.patient_ref
    assert charge["billing_institution"] == dev_keys.institution_id

    # The analyser sends K again (a re-run), and one NA record is delivered twice.
    await report_results(lab, dev_keys, t.barcode, obs("K", "4.2"))
    record = build_record(dev_keys.lis_signer(), analyser_results(t.barcode, obs("NA", "139")))
    before = lab.runtime.consumer.processed
    for _ in range(2):
        await lab.terminal.send_raw(record.key, record.value, record.headers)
    await until(lambda: lab.runtime.consumer.processed >= before + 2, what="both copies handled")
    await one(lab, POSTED, order_id=o.order_id, test_code="NA")
    assert len(seen(lab, "results.reported.v1", barcode=t.barcode)) == 3   # K, K again, NA

    # Confirmed: a further run is refused, and charges nothing.
    await confirm(lab, dev_keys, t.barcode)
    late = await lis(lab, dev_keys).publish(analyser_results(t.barcode, obs("K", "4.3")))
    [refused] = await lab.events.wait_for(rejection_for(late))
    assert payload(refused)["reason"] == "already_confirmed"
    await verify(lab, dev_keys, o.order_id)
    await one(lab, "report.verified.v1", order_id=o.order_id)

    assert await fetchval(lab, "SELECT count(*) FROM charges WHERE order_id = $1",
                          o.order_id) == 2
    assert sorted(c["test_code"] for c in seen(lab, POSTED, order_id=o.order_id)) == ["K", "NA"]
    assert not seen(lab, "intake.rejected.v1", rejected_id=record.ce_id)


async def test_cancelling_a_resulted_test_reverses_its_charge_and_drops_its_result(
        lab, dev_keys):
    o, t = await ordered_tube(lab, dev_keys, ("K", "CTNI"))
    await receive(lab, dev_keys, t.barcode)
    await report_results(lab, dev_keys, t.barcode, obs("K", "4.1"), obs("CTNI", "40"))
    posted = {c["test_code"]: c for c in
              [await one(lab, POSTED, order_id=o.order_id, test_code=c) for c in ("K", "CTNI")]}

    await lab.terminal.publish(cancel(o.order_id, tests=("CTNI",)))
    reversed_ = await one(lab, REVERSED, order_id=o.order_id)
    assert reversed_["charge_id"] == posted["CTNI"]["charge_id"]
    assert reversed_["reason"] == "test_cancelled"
    assert Decimal(str(reversed_["amount"])) == price_of("CTNI")
    assert reversed_["visit_id"] == o.visit_id

    # Only K is left on the tube: it waits for confirmation, and confirming it
    # neither confirms the cancelled troponin nor raises its critical value (40 > 26.2).
    async with technologist(lab, dev_keys) as staff:
        queue = (await staff.get("/worklist")).json()["queue"]
    assert [x["barcode"] for x in queue["awaiting_confirmation"]] == [t.barcode]
    answer = await confirm(lab, dev_keys, t.barcode)
    assert [i.split(".")[1] for i in answer["confirmed"]] == ["K"]
    assert answer["critical_values"] == []
    await verify(lab, dev_keys, o.order_id)
    verified = await one(lab, "report.verified.v1", order_id=o.order_id)
    assert [x["code"] for x in verified["observations"]] == ["K"]
    async with clinician(lab, dev_keys) as clinic:
        view = (await clinic.get(f"/orders/{o.order_id}")).json()
    assert {x["test_code"]: x["status"] for x in view["tests"]} == {
        "K": "verified", "CTNI": "cancelled"}
    assert view["status"] == "completed"
    assert [s["state"] for s in view["specimens"]] == ["verified"]

    # K confirmed: cancelling it is refused, and its charge stands.
    ce_id = await lab.terminal.publish(cancel(o.order_id, tests=("K",)))
    [refused] = await lab.events.wait_for(rejection_for(ce_id))
    assert payload(refused)["reason"] == "test_already_resulted"
    assert len(seen(lab, REVERSED, order_id=o.order_id)) == 1
    assert await fetchval(lab, "SELECT count(*) FROM charges WHERE order_id = $1 AND"
                               " reversed_at IS NULL", o.order_id) == 1


async def test_cancelling_the_order_reverses_every_posted_charge(lab, dev_keys):
    o, t = await ordered_tube(lab, dev_keys, ("K", "NA", "CTNI"))
    await receive(lab, dev_keys, t.barcode)
    await report_results(lab, dev_keys, t.barcode, obs("K", "4.1"), obs("NA", "140"))
    for code in ("K", "NA"):
        await one(lab, POSTED, order_id=o.order_id, test_code=code)
    await lab.terminal.publish(cancel(o.order_id))
    cancelled = await one(lab, "tests.cancelled.v1", order_id=o.order_id)
    assert cancelled["order_cancelled"] is True
    assert cancelled["patient_ref"] == o.patient_ref  # since 1.1, for FHIR's subject
    reversals = await lab.events.wait_for(
        lambda r: r in lab.events.of_type(REVERSED), count=2)
    assert sorted(payload(r)["reason"] for r in reversals) == ["order_cancelled"] * 2
    assert {payload(r)["charge_id"] for r in reversals} == {
        c["charge_id"] for c in seen(lab, POSTED, order_id=o.order_id)}
    async with technologist(lab, dev_keys) as staff:
        assert (await staff.post(f"/specimens/{t.barcode}/confirm")).status_code == 409
    assert await fetchval(lab, "SELECT state FROM specimens WHERE barcode = $1",
                          t.barcode) == "cancelled"
    # The troponin result that comes now is refused, and charged nothing.
    ce_id = await lis(lab, dev_keys).publish(analyser_results(t.barcode, obs("CTNI", "3")))
    [refused] = await lab.events.wait_for(rejection_for(ce_id))
    assert payload(refused)["reason"] == "specimen_cancelled"
    assert len(seen(lab, POSTED, order_id=o.order_id)) == 2

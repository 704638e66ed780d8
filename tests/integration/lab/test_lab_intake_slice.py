"""The first lab slice: a clinic terminal's signed LabOrderPlaced and
SpecimenCollected become LabOrderAccepted / SpecimenCollectionRecorded, or an
IntakeRejected naming the reason."""

from __future__ import annotations

from labflow import ce_type, collected, header, order, payload, rejection_for


async def test_order_then_collection_are_accepted_through_the_outbox(lab, dev_keys):
    o = order(dev_keys.institution_id)
    await lab.terminal.publish(o)
    await lab.terminal.publish(collected(o))
    accepted, recorded = await lab.events.wait_for(
        lambda r: payload(r).get("order_id") == o.order_id, count=2)
    assert ce_type(accepted) == "yigongti.lab.order.accepted.v1"
    assert ce_type(recorded) == "yigongti.lab.specimen.collection_recorded.v1"
    assert payload(accepted)["lab_centre"] == "652325-L01"
    assert accepted.key.decode() == o.order_id
    # ce_aggseq counts the order's events without a gap.
    assert [header(r, "ce_aggseq") for r in (accepted, recorded)] == ["1", "2"]
    assert header(accepted, "ce_source") == "/yigongti/lab"


async def test_unknown_test_code_is_rejected_naming_the_field(lab, dev_keys):
    o = order(dev_keys.institution_id, tests=("K", "NOPE"))
    ce_id = await lab.terminal.publish(o)
    [answer] = await lab.events.wait_for(rejection_for(ce_id))
    body = payload(answer)
    assert body["reason"] == "unknown_test"
    assert body["fields"] == [{"field": "tests.1.code", "code": "unknown_test"}]
    assert answer.key.decode() == o.order_id
    assert "NOPE" not in answer.value.decode()  # names and codes, never values


async def test_order_for_another_institution_is_forbidden(lab, dev_keys):
    o = order("652325-B02")  # the terminal is registered to 652325-B01
    ce_id = await lab.terminal.publish(o)
    [answer] = await lab.events.wait_for(rejection_for(ce_id))
    assert payload(answer)["reason"] == "forbidden_institution"


async def test_collection_of_unordered_test_and_reused_barcode_are_rejected(lab, dev_keys):
    o = order(dev_keys.institution_id)
    await lab.terminal.publish(o)
    first = collected(o, tests=("K",))
    await lab.terminal.publish(first)
    again = await lab.terminal.publish(collected(o, barcode=first.barcode, tests=("CTNI",)))
    unordered = await lab.terminal.publish(collected(o, tests=("GLU",)))
    [a] = await lab.events.wait_for(rejection_for(again))
    [b] = await lab.events.wait_for(rejection_for(unordered))
    assert payload(a)["reason"] == "barcode_already_collected"
    assert payload(b)["reason"] == "test_not_ordered"

"""Mutual recognition (互认, DESIGN §5): a verified result of a test on the
recognition list answers a new order for that patient and test within its
window (DuplicateTestAvoided, no charge), unless the order gives one of the
seven override reasons; the recognised results are readable by the lab and by
clinics with an order for the patient; an amendment keeps the original,
supersedes the recognised result and tells the order that reused it."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from labflow import collected, order, payload, rejection_for
from labjourney import (
    LAB_CENTRE,
    OTHER_CENTRE,
    OTHER_CLINIC,
    clinician,
    confirm,
    feed_settled,
    fetchval,
    http,
    new_patient,
    obs,
    one,
    physician,
    receive,
    register_terminal,
    report_results,
    seen,
    technologist,
    verified_order,
)
from yigongti_contracts.lab.codes import OverrideReason
from yigongti_contracts.lab.parts import OrderedTest
from yigongti_kit.timers import shift_clock
from yigongti_lab import catalogue


async def accepted(lab, o) -> dict:
    return await one(lab, "order.accepted.v1", order_id=o.order_id)


async def collect_and_result(lab, dev_keys, o, values: dict[str, str], terminal=None):
    """Collect one tube for `values`' tests, receive it, send the results."""
    t = collected(o, tests=tuple(values))
    await (terminal or lab.terminal).publish(t)
    await one(lab, "collection_recorded.v1", barcode=t.barcode)
    await receive(lab, dev_keys, t.barcode)
    await report_results(lab, dev_keys, t.barcode, *(obs(c, v) for c, v in values.items()))
    return t


async def test_a_recognised_result_answers_a_new_order_and_is_not_charged(lab, dev_keys):
    patient = new_patient()
    first, _ = await verified_order(lab, dev_keys, ("K", "CTNI"), patient=patient)
    verified = await one(lab, "report.verified.v1", order_id=first.order_id)
    [recognition] = verified["recognitions"]        # troponin is not on the list
    assert recognition["code"] == "K"
    window = catalogue.recognition_window("K")
    assert datetime.fromisoformat(recognition["valid_until"]) - datetime.fromisoformat(
        verified["verified_at"]) == window == timedelta(days=7)

    again = order(dev_keys.institution_id, tests=("K", "CTNI"), patient_ref=patient)
    stranger = order(dev_keys.institution_id, tests=("K",), patient_ref=new_patient())
    await lab.terminal.publish(again)
    await lab.terminal.publish(stranger)
    answer = await accepted(lab, again)
    assert answer["tests"] == ["CTNI"] and answer["avoided_tests"] == ["K"]
    avoided = await one(lab, "duplicate_avoided.v1", order_id=again.order_id)
    assert avoided["test_code"] == "K" and avoided["patient_ref"] == patient
    assert avoided["recognised"]["observation_id"] == recognition["observation_id"]
    assert avoided["recognised"]["performed_by"] == LAB_CENTRE
    assert avoided["recognised"]["report_revision"] == 1
    other = await accepted(lab, stranger)            # another patient: tested as usual
    assert other["tests"] == ["K"] and other["avoided_tests"] == []

    # The avoided test cannot be collected, and only troponin is done and billed.
    refused = await lab.terminal.publish(collected(again, tests=("K",)))
    [answer] = await lab.events.wait_for(rejection_for(refused))
    assert payload(answer)["reason"] == "test_avoided"
    await collect_and_result(lab, dev_keys, again, {"CTNI": "4"})
    [charge] = await lab.events.wait_for(
        lambda r: payload(r).get("order_id") == again.order_id and "charge_id" in payload(r))
    assert payload(charge)["test_code"] == "CTNI"
    assert await fetchval(lab, "SELECT array_agg(test_code) FROM charges WHERE order_id = $1",
                          again.order_id) == ["CTNI"]
    async with clinician(lab, dev_keys) as clinic:
        view = (await clinic.get(f"/orders/{again.order_id}")).json()
    assert {t["test_code"]: t["status"] for t in view["tests"]}["K"] == "avoided"
    assert not seen(lab, "duplicate_avoided.v1", order_id=stranger.order_id)


@pytest.mark.parametrize("reason", list(OverrideReason))
async def test_each_override_reason_repeats_the_test(lab, dev_keys, reason):
    assert len(OverrideReason) == 7
    patient = new_patient()
    await verified_order(lab, dev_keys, ("K",), patient=patient)
    again = order(dev_keys.institution_id, tests=("K",), patient_ref=patient)
    again = again.model_copy(update={"tests": (OrderedTest(code="K", override_reason=reason),)})
    await lab.terminal.publish(again)
    answer = await accepted(lab, again)
    assert answer["tests"] == ["K"] and answer["avoided_tests"] == []
    assert await fetchval(lab, "SELECT override_reason FROM order_tests WHERE order_id = $1",
                          again.order_id) == reason.value
    await collect_and_result(lab, dev_keys, again, {"K": "4.6"})
    charge = await one(lab, "charges.posted.v1", order_id=again.order_id)
    assert charge["test_code"] == "K"
    assert not seen(lab, "duplicate_avoided.v1", order_id=again.order_id)


async def test_recognised_results_are_for_the_lab_and_clinics_of_the_patient(
        lab, dev_keys, tmp_path):
    patient = new_patient()
    first, _ = await verified_order(lab, dev_keys, ("K", "NA", "CTNI"), patient=patient)
    path = f"/patients/{patient}/recognised-results"
    async with technologist(lab, dev_keys) as staff:
        for_lab = await staff.get(path)
    async with clinician(lab, dev_keys) as clinic:
        for_clinic = await clinic.get(path)
    # Out of scope is answered as an unknown patient: 404.
    async with clinician(lab, dev_keys, OTHER_CLINIC) as other:
        assert (await other.get(path)).status_code == 404
    # Lab staff of a centre that never had an order for the patient: 404 too.
    async with technologist(lab, dev_keys, OTHER_CENTRE) as stranger:
        assert (await stranger.get(path)).status_code == 404
    async with http(lab, dev_keys, OTHER_CLINIC, ("lab_technologist",)) as odd:
        assert (await odd.get(path)).status_code == 404
    assert for_lab.status_code == 200 and for_clinic.status_code == 200
    assert for_lab.json() == for_clinic.json()
    rows = {r["test_code"]: r for r in for_clinic.json()["results"]}
    assert set(rows) == {"K", "NA"}
    assert rows["K"]["value"] == "4.2" and rows["K"]["performed_by"] == LAB_CENTRE

    # Another clinic that orders for this patient reuses the result and may read it.
    other_terminal = await register_terminal(lab, tmp_path, OTHER_CLINIC)
    theirs = order(OTHER_CLINIC, tests=("NA", "CL"), patient_ref=patient)
    await other_terminal.publish(theirs)
    answer = await accepted(lab, theirs)
    assert answer["avoided_tests"] == ["NA"] and answer["tests"] == ["CL"]
    await feed_settled(lab)
    async with clinician(lab, dev_keys, OTHER_CLINIC) as other:
        assert (await other.get(path)).status_code == 200
        assert (await other.get(f"/orders/{first.order_id}")).status_code == 404
        feed = (await other.get("/feed", params={"limit": 500})).json()["items"]
    assert {i["order_id"] for i in feed} == {theirs.order_id}

    # Past the validity window nothing is recognised and the test is done again.
    async with lab.pool.acquire() as conn:
        await shift_clock(conn, timedelta(days=8))
    async with technologist(lab, dev_keys) as staff:
        assert (await staff.get(path)).json()["results"] == []
    later = order(dev_keys.institution_id, tests=("K",), patient_ref=patient)
    await lab.terminal.publish(later)
    answer = await accepted(lab, later)
    assert answer["tests"] == ["K"] and answer["avoided_tests"] == []


async def test_an_amendment_keeps_the_original_and_tells_the_order_that_reused_it(
        lab, dev_keys):
    patient = new_patient()
    first, _ = await verified_order(lab, dev_keys, ("K", "NA"), patient=patient)
    verified = await one(lab, "report.verified.v1", order_id=first.order_id)
    original = {o["code"]: o["observation_id"] for o in verified["observations"]}["K"]
    reuser = order(dev_keys.institution_id, tests=("K",), patient_ref=patient)
    await lab.terminal.publish(reuser)
    assert (await accepted(lab, reuser))["avoided_tests"] == ["K"]

    body = {"observation_id": original, "value": "5.9", "reason": "analytical_error"}
    async with technologist(lab, dev_keys) as staff:
        assert (await staff.post(f"/orders/{first.order_id}/amend", json=body)).status_code == 403
    async with physician(lab, dev_keys, user="phys-3") as doctor:
        answer = await doctor.post(f"/orders/{first.order_id}/amend", json=body)
        assert answer.status_code == 200, answer.text
        again = await doctor.post(f"/orders/{first.order_id}/amend", json=body)
        missing = await doctor.post(f"/orders/{first.order_id}/amend",
                                    json={**body, "observation_id": "nothing.K.1"})
    assert again.status_code == 409            # the original is superseded now
    assert missing.status_code == 404
    replacement = answer.json()["observation_id"]
    assert answer.json()["revision"] == 2 and answer.json()["supersedes"] == original

    amended = await one(lab, "report.amended.v1", order_id=first.order_id)
    assert amended["revision"] == 2 and amended["reason"] == "analytical_error"
    assert amended["amended_by"] == "phys-3"
    assert amended["superseded_observation_ids"] == [original]
    [new] = amended["observations"]
    assert new["observation_id"] == replacement
    assert Decimal(str(new["value"])) == Decimal("5.9") and new["flag"] == "H"
    assert [r["observation_id"] for r in amended["recognitions"]] == [replacement]

    told = await one(lab, "recognised_result.amended.v1", order_id=reuser.order_id)
    assert told["test_code"] == "K"
    assert told["ordering_institution"] == dev_keys.institution_id
    assert told["reused"]["observation_id"] == original
    assert told["reused"]["report_revision"] == 1
    assert told["replacement"]["observation_id"] == replacement
    assert told["replacement"]["report_revision"] == 2
    assert len(seen(lab, "recognised_result.amended.v1")) == 1   # nobody else reused it

    async with clinician(lab, dev_keys) as clinic:
        report = (await clinic.get(f"/orders/{first.order_id}/report")).json()
        recognised = (await clinic.get(f"/patients/{patient}/recognised-results")).json()
    k_rows = [(r["observation_id"], r["status"], r["value"], r["report_revision"], r["supersedes"])
              for r in report["observations"] if r["code"] == "K"]
    assert sorted(k_rows) == sorted([(original, "superseded", "4.2", 1, None),
                                     (replacement, "verified", "5.9", 2, original)])
    assert [(r["revision"], r["by_staff"], r["reason"]) for r in report["revisions"]] == [
        (1, "phys-2", None), (2, "phys-3", "analytical_error")]
    assert {r["test_code"]: r["observation_id"] for r in recognised["results"]}["K"] == \
        replacement

    # A later order reuses the amended result, not the superseded one.
    later = order(dev_keys.institution_id, tests=("K",), patient_ref=patient)
    await lab.terminal.publish(later)
    avoided = await one(lab, "duplicate_avoided.v1", order_id=later.order_id)
    assert avoided["recognised"]["observation_id"] == replacement
    assert avoided["recognised"]["report_revision"] == 2


async def test_a_result_sent_again_before_confirmation_is_not_in_the_report(lab, dev_keys):
    """A re-run replaces the reported result; the report shows what was
    verified (and amended), never the replaced, unverified first run."""
    from labjourney import ordered_tube, verify

    o, t = await ordered_tube(lab, dev_keys, ("K",))
    await receive(lab, dev_keys, t.barcode)
    first = await report_results(lab, dev_keys, t.barcode, obs("K", "7.9"))   # haemolysis?
    rerun = await report_results(lab, dev_keys, t.barcode, obs("K", "4.3"))
    await confirm(lab, dev_keys, t.barcode)
    await verify(lab, dev_keys, o.order_id)
    async with clinician(lab, dev_keys) as clinic:
        report = (await clinic.get(f"/orders/{o.order_id}/report")).json()
    assert [(r["observation_id"], r["value"]) for r in report["observations"]] == [
        (rerun["observations"][0]["observation_id"], "4.3")]
    assert first["observations"][0]["observation_id"] != rerun["observations"][0][
        "observation_id"]
    assert not seen(lab, "critical_value.raised.v1")   # the replaced 7.9 was never confirmed


async def test_a_reused_panel_is_charged_once_and_its_reuser_told_of_any_line_amended(
        lab, dev_keys):
    """A panel (CBC: WBC, HGB, PLT) is one test: resulted, charged and
    recognised as one; amending any of its lines tells the order that reused it."""
    from labjourney import ordered_tube, verify
    from yigongti_contracts.lab.codes import TubeType

    patient = new_patient()
    o, t = await ordered_tube(lab, dev_keys, ("CBC",), patient=patient, tube=TubeType.edta_k2)
    await receive(lab, dev_keys, t.barcode)
    await report_results(lab, dev_keys, t.barcode, obs("WBC", "6.1"), obs("HGB", "140"))
    await report_results(lab, dev_keys, t.barcode, obs("PLT", "210"))
    charge = await one(lab, "charges.posted.v1", order_id=o.order_id)
    assert charge["test_code"] == "CBC" and charge["item_code"] == catalogue.price_item(
        "CBC").item
    await confirm(lab, dev_keys, t.barcode)
    await verify(lab, dev_keys, o.order_id)
    verified = await one(lab, "report.verified.v1", order_id=o.order_id)
    lines = {x["code"]: x["observation_id"] for x in verified["observations"]}
    assert set(lines) == {"WBC", "HGB", "PLT"}
    assert await fetchval(lab, "SELECT count(*) FROM charges WHERE order_id = $1",
                          o.order_id) == 1

    reuser = order(dev_keys.institution_id, tests=("CBC",), patient_ref=patient)
    await lab.terminal.publish(reuser)
    assert (await accepted(lab, reuser))["avoided_tests"] == ["CBC"]
    for code in ("HGB", "PLT", "WBC"):
        body = {"observation_id": lines[code], "value": "99", "reason": "transcription_error"}
        async with physician(lab, dev_keys) as doctor:
            answer = await doctor.post(f"/orders/{o.order_id}/amend", json=body)
        assert answer.status_code == 200, answer.text
    told = await lab.events.wait_for(
        lambda r: payload(r).get("order_id") == reuser.order_id and "reused" in payload(r),
        count=3)
    assert sorted(payload(r)["replacement"]["report_revision"] for r in told) == [2, 3, 4]

"""Receipt and inspection at the lab centre over HTTP, per tube: accepted, or
rejected with each reason and the clinic asked to recollect; a multi-tube order
with one tube rejected and recollected; the in-transit alarm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from labflow import ce_type, collected, order, payload
from yigongti_contracts.lab.codes import TubeType
from yigongti_kit.auth import issue_token
from yigongti_kit.timers import shift_clock

LAB_CENTRE = "652325-L01"  # serves 652325-B01, the demo terminal's branch
GOOD = {"not_haemolysed": True, "not_lipaemic": True, "not_clotted": True,
        "volume_sufficient": True, "right_tube": True, "label_matches": True}


def staff(lab, dev_keys, institution: str = LAB_CENTRE, roles=("lab_technologist",)):
    token = issue_token(dev_keys.auth_private_pem, user="tech-8", institution=institution,
                        roles=list(roles), audience="lab")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=lab.runtime.app),
                             base_url="http://lab", headers={"Authorization": f"Bearer {token}"})


async def collected_tube(lab, dev_keys, tests=("K", "CTNI"), tube=TubeType.serum_gold):
    o = order(dev_keys.institution_id, tests=tests)
    t = collected(o, tests=tests, tube=tube)
    await lab.terminal.publish(o)
    await lab.terminal.publish(t)
    await lab.events.wait_for(lambda r: ce_type(r).endswith("collection_recorded.v1")
                              and payload(r)["barcode"] == t.barcode)
    return o, t


def of(barcode: str, suffix: str):
    return lambda r: ce_type(r).endswith(suffix) and payload(r).get("barcode") == barcode


async def test_a_good_tube_is_received(lab, dev_keys):
    o, t = await collected_tube(lab, dev_keys)
    async with staff(lab, dev_keys) as http:
        answer = await http.post(f"/specimens/{t.barcode}/receipt", json={"inspection": GOOD})
        again = await http.post(f"/specimens/{t.barcode}/receipt", json={"inspection": GOOD})
    assert answer.status_code == 200 and answer.json()["state"] == "received"
    assert again.status_code == 409 and "received" in again.json()["detail"]
    [received] = await lab.events.wait_for(of(t.barcode, "specimen.received.v1"))
    assert payload(received)["received_by"] == "tech-8"


@pytest.mark.parametrize(("change", "reason"), [
    ({"inspection": {**GOOD, "free_haemoglobin_g_per_l": "1.2"}}, "haemolysed"),
    ({"inspection": {**GOOD, "not_lipaemic": False}}, "lipaemic"),
    ({"inspection": {**GOOD, "not_clotted": False}}, "clotted"),
    ({"inspection": {**GOOD, "volume_sufficient": False}}, "insufficient_volume"),
    ({"inspection": {**GOOD, "right_tube": False}}, "wrong_tube"),
    ({"inspection": GOOD, "labelled": False}, "unlabelled"),
    ({"inspection": {**GOOD, "label_matches": False}}, "label_mismatch"),
    ({"inspection": GOOD, "received_at": "late"}, "transport_time_exceeded"),
    ({"inspection": GOOD, "logger": {"logger_id": "logger-9", "min_celsius": "1.0",
                                     "max_celsius": "31.0", "minutes_outside_band": 240}},
     "temperature_excursion"),
])
async def test_each_rejection_reason_asks_the_clinic_to_recollect(lab, dev_keys, change, reason):
    o, t = await collected_tube(lab, dev_keys)
    if change.get("received_at") == "late":
        change = {**change, "received_at": (t.collected_at + timedelta(days=3)).isoformat()}
    async with staff(lab, dev_keys) as http:
        answer = await http.post(f"/specimens/{t.barcode}/receipt", json=change)
    assert answer.status_code == 200, answer.text
    assert answer.json()["reasons"] == [reason]
    [rejected] = await lab.events.wait_for(of(t.barcode, "specimen.rejected.v1"))
    [recollect] = await lab.events.wait_for(of(t.barcode, "recollection_requested.v1"))
    assert payload(rejected)["reasons"] == [reason]
    assert payload(recollect)["ordering_institution"] == dev_keys.institution_id
    assert sorted(payload(recollect)["tests"]) == ["CTNI", "K"]


async def test_one_tube_rejected_and_recollected_while_the_other_goes_on(lab, dev_keys):
    o = order(dev_keys.institution_id, tests=("K", "CBC"))
    serum = collected(o, tests=("K",), tube=TubeType.serum_gold)
    edta = collected(o, tests=("CBC",), tube=TubeType.edta_k2)
    for record in (o, serum, edta):
        await lab.terminal.publish(record)
    await lab.events.wait_for(of(edta.barcode, "collection_recorded.v1"))
    async with staff(lab, dev_keys) as http:
        bad = await http.post(f"/specimens/{serum.barcode}/receipt",
                              json={"inspection": {**GOOD, "not_clotted": False}})
        good = await http.post(f"/specimens/{edta.barcode}/receipt", json={"inspection": GOOD})
        assert bad.json()["state"] == "rejected" and good.json()["state"] == "received"
        redraw = collected(o, tests=("K",), tube=TubeType.serum_gold)
        redraw = redraw.model_copy(update={"recollection_of": serum.barcode})
        await lab.terminal.publish(redraw)
        await lab.events.wait_for(of(redraw.barcode, "collection_recorded.v1"))
        again = await http.post(f"/specimens/{redraw.barcode}/receipt", json={"inspection": GOOD})
    assert again.json()["state"] == "received"
    async with lab.pool.acquire() as conn:
        rows = await conn.fetch("SELECT test_code, barcode FROM order_tests WHERE order_id = $1"
                                " ORDER BY test_code", o.order_id)
    assert [(r["test_code"], r["barcode"]) for r in rows] == [
        ("CBC", edta.barcode), ("K", redraw.barcode)]


async def test_a_tube_still_in_transit_past_its_limit_raises_an_alarm(lab, dev_keys):
    o, t = await collected_tube(lab, dev_keys)
    async with lab.pool.acquire() as conn:
        stable_until = await conn.fetchval("SELECT stable_until FROM specimens WHERE barcode = $1",
                                           t.barcode)
        assert stable_until is not None
        await shift_clock(conn, stable_until - datetime.now(UTC) + timedelta(minutes=1))
    [alarm] = await lab.events.wait_for(of(t.barcode, "in_transit_overdue.v1"))
    assert payload(alarm)["order_id"] == o.order_id


async def test_receipt_is_for_the_lab_centre_staff_only(lab, dev_keys):
    o, t = await collected_tube(lab, dev_keys)
    async with staff(lab, dev_keys, institution="652324-L01") as other_centre:
        assert (await other_centre.post(f"/specimens/{t.barcode}/receipt",
                                        json={"inspection": GOOD})).status_code == 404
    async with staff(lab, dev_keys, roles=("clinician",)) as clinician:
        assert (await clinician.post(f"/specimens/{t.barcode}/receipt",
                                     json={"inspection": GOOD})).status_code == 403
    async with staff(lab, dev_keys) as http:
        assert (await http.post("/specimens/NOSUCH123/receipt",
                                json={"inspection": GOOD})).status_code == 404
        assert (await http.post(f"/specimens/{t.barcode}/receipt",
                                json={"inspection": {"not_clotted": True}})).status_code == 422

"""Critical values (DESIGN §5): raised when a technologist confirms the result,
not before; only the ordering clinic's acknowledgement with the read-back
confirmed stops the clock; otherwise every 15 minutes (data) the next person
on the lab centre's roster is called, again and again; call-backs are
recorded and only one with the read-back confirmed stops the clock."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal

from labflow import payload, rejection_for
from labjourney import (
    LAB_CENTRE,
    OTHER_CENTRE,
    OTHER_CLINIC,
    ack,
    clinician,
    confirm,
    feed_settled,
    fetchval,
    is_,
    lis,
    obs,
    one,
    ordered_tube,
    receive,
    register_terminal,
    report_results,
    seen,
    technologist,
)
from yigongti_kit.timers import shift_clock
from yigongti_lab import roster

ESCALATED = "critical_value.escalated.v1"
ACKNOWLEDGED = "critical_value.acknowledged.v1"


async def confirmed_critical(lab, dev_keys, k: str = "6.8") -> dict:
    """A K result above the critical limit, reported and confirmed: its CriticalValueRaised."""
    o, t = await ordered_tube(lab, dev_keys, ("K",))
    await receive(lab, dev_keys, t.barcode)
    await report_results(lab, dev_keys, t.barcode, obs("K", k))
    await confirm(lab, dev_keys, t.barcode)
    return await one(lab, "critical_value.raised.v1", barcode=t.barcode)


async def move_clock(lab, by: timedelta = timedelta(minutes=16)) -> None:
    async with lab.pool.acquire() as conn:
        await shift_clock(conn, by)


async def escalations(lab, critical: dict, count: int) -> list[dict]:
    found = await lab.events.wait_for(is_(ESCALATED, critical_id=critical["critical_id"]),
                                      count=count)
    return [payload(r) for r in found]


def roster_at(level: int) -> str:
    return roster.who_next(LAB_CENTRE, level).staff_id


async def test_a_critical_potassium_is_raised_when_confirmed_and_not_before(lab, dev_keys):
    o, t = await ordered_tube(lab, dev_keys, ("K", "NA", "CTNI"))
    await receive(lab, dev_keys, t.barcode)
    reported = await report_results(lab, dev_keys, t.barcode,
                                    obs("K", "6.8"), obs("NA", "140"), obs("CTNI", "5"))
    flags = {x["code"]: (x["flag"], x["critical"]) for x in reported["observations"]}
    assert flags == {"K": ("H", True), "NA": ("N", False), "CTNI": ("N", False)}
    # Reported but not yet confirmed: nothing raised, no clock running.
    await asyncio.sleep(0.5)
    assert not seen(lab, "critical_value.raised.v1")
    assert await fetchval(lab, "SELECT count(*) FROM critical_values") == 0

    answer = await confirm(lab, dev_keys, t.barcode)
    assert len(answer["critical_values"]) == 1
    raised = await one(lab, "critical_value.raised.v1", barcode=t.barcode)
    assert raised["critical_id"] == answer["critical_values"][0]
    assert raised["test_code"] == "K" and Decimal(str(raised["value"])) == Decimal("6.8")
    assert raised["unit"] == "mmol/L" and raised["direction"] == "high"
    assert raised["confirmed_by"] == "tech-8"
    assert raised["ordering_institution"] == dev_keys.institution_id
    assert raised["lab_centre"] == LAB_CENTRE
    escalate_at = datetime.fromisoformat(raised["escalate_at"])
    raised_at = datetime.fromisoformat(raised["raised_at"])
    assert escalate_at - raised_at == roster.escalation_interval() == timedelta(minutes=15)
    # The ordering clinic reads it on its feed.
    await feed_settled(lab)
    async with clinician(lab, dev_keys) as clinic:
        items = (await clinic.get("/feed", params={"limit": 500})).json()["items"]
    assert any(i["type"].endswith("critical_value.raised.v1") for i in items)


async def test_read_back_stops_the_clock_and_an_ack_without_it_does_not(lab, dev_keys):
    read_back = await confirmed_critical(lab, dev_keys)
    heard_only = await confirmed_critical(lab, dev_keys, "2.5")   # low critical
    control = await confirmed_critical(lab, dev_keys)   # never acknowledged
    assert heard_only["direction"] == "low"

    record = lab.terminal.record(ack(read_back, read_back=True))
    for _ in range(2):      # delivered twice: one acknowledgement, one call recorded
        await lab.terminal.send_raw(record.key, record.value, record.headers)
    acknowledged = await one(lab, ACKNOWLEDGED, critical_id=read_back["critical_id"])
    assert acknowledged["channel"] == "terminal" and acknowledged["acknowledged_by"] == "doc-17"
    assert acknowledged["escalation_level"] == 0
    assert acknowledged["ordering_institution"] == dev_keys.institution_id

    await lab.terminal.publish(ack(heard_only, read_back=False))
    await until_calls(lab, heard_only, 1)
    assert not seen(lab, ACKNOWLEDGED, critical_id=heard_only["critical_id"])

    # 15 minutes on: the unconfirmed one goes to the roster's next person, and
    # again after another 15, cycling through the roster; the acknowledged one never.
    for level in (1, 2, 3):
        await move_clock(lab)
        found = await escalations(lab, heard_only, level)
        assert [(e["level"], e["escalated_to"]) for e in found] == [
            (n, roster_at(n)) for n in range(1, level + 1)]
    assert roster_at(1) == f"{LAB_CENTRE}-PHY1" and roster_at(2) == f"{LAB_CENTRE}-HEAD"
    last = found[-1]
    assert datetime.fromisoformat(last["next_escalation_at"]) - datetime.fromisoformat(
        last["escalated_at"]) == timedelta(minutes=15)
    assert not seen(lab, ESCALATED, critical_id=read_back["critical_id"])
    assert len(seen(lab, ACKNOWLEDGED, critical_id=read_back["critical_id"])) == 1
    assert await fetchval(lab, "SELECT count(*) FROM critical_calls WHERE critical_id = $1",
                          read_back["critical_id"]) == 1

    # A read-back later, after three escalations, stops it at that level.
    await lab.terminal.publish(ack(heard_only, read_back=True, by="doc-99"))
    late = await one(lab, ACKNOWLEDGED, critical_id=heard_only["critical_id"])
    assert late["escalation_level"] == 3 and late["acknowledged_by"] == "doc-99"
    await move_clock(lab)
    await escalations(lab, control, 4)
    assert len(seen(lab, ESCALATED, critical_id=heard_only["critical_id"])) == 3
    assert not seen(lab, ESCALATED, critical_id=read_back["critical_id"])


async def until_calls(lab, critical: dict, count: int) -> None:
    from labjourney import until

    await until(lambda: fetchval(lab, "SELECT count(*) >= $2 FROM critical_calls"
                                      " WHERE critical_id = $1", critical["critical_id"], count),
                what=f"{count} calls recorded")


async def test_call_backs_are_recorded_and_only_a_read_back_stops_the_clock(lab, dev_keys):
    critical = await confirmed_critical(lab, dev_keys)
    control = await confirmed_critical(lab, dev_keys)
    path = f"/critical-values/{critical['critical_id']}/call-backs"
    async with technologist(lab, dev_keys) as staff:
        nobody = await staff.post(path, json={"outcome": "unable_to_reach"})
        heard = await staff.post(path, json={"reached": "doc-17",
                                             "outcome": "reached_no_read_back"})
        incoherent = await staff.post(path, json={"outcome": "confirmed_read_back"})
    assert nobody.status_code == 200 and nobody.json()["acknowledged"] is False
    assert heard.status_code == 200 and heard.json()["acknowledged"] is False
    assert incoherent.status_code == 422
    recorded = await lab.events.wait_for(
        lambda r: payload(r).get("critical_id") == critical["critical_id"]
        and "called_by" in payload(r), count=2)
    assert [(payload(r)["outcome"], payload(r)["reached"], payload(r)["called_by"])
            for r in recorded] == [("unable_to_reach", None, "tech-8"),
                                   ("reached_no_read_back", "doc-17", "tech-8")]

    await move_clock(lab)
    [first] = await escalations(lab, critical, 1)
    assert (first["level"], first["escalated_to"]) == (1, roster_at(1))

    async with technologist(lab, dev_keys) as staff:
        confirmed = await staff.post(path, json={"reached": "doc-17",
                                                 "outcome": "confirmed_read_back"})
        again = await staff.post(path, json={"reached": "doc-17",
                                             "outcome": "confirmed_read_back"})
    assert confirmed.status_code == 200 and confirmed.json()["acknowledged"] is True
    assert again.status_code == 409
    acknowledged = await one(lab, ACKNOWLEDGED, critical_id=critical["critical_id"])
    assert acknowledged["channel"] == "call_back" and acknowledged["escalation_level"] == 1

    await move_clock(lab)
    await escalations(lab, control, 2)          # the clock runs for the other one
    assert len(seen(lab, ESCALATED, critical_id=critical["critical_id"])) == 1
    assert await fetchval(lab, "SELECT count(*) FROM critical_calls WHERE critical_id = $1",
                          critical["critical_id"]) == 3


async def test_call_backs_are_for_the_lab_centre_staff(lab, dev_keys):
    critical = await confirmed_critical(lab, dev_keys)
    path = f"/critical-values/{critical['critical_id']}/call-backs"
    body = {"reached": "doc-17", "outcome": "confirmed_read_back"}
    async with technologist(lab, dev_keys, OTHER_CENTRE) as stranger:
        assert (await stranger.post(path, json=body)).status_code == 404
    async with clinician(lab, dev_keys) as clinic:
        assert (await clinic.post(path, json=body)).status_code == 403
    async with technologist(lab, dev_keys) as staff:
        assert (await staff.post("/critical-values/CV-nothing/call-backs",
                                 json=body)).status_code == 404
    assert not seen(lab, ACKNOWLEDGED, critical_id=critical["critical_id"])


async def test_an_ack_from_another_institution_is_refused_and_the_clock_runs_on(
        lab, dev_keys, tmp_path):
    critical = await confirmed_critical(lab, dev_keys)
    other_clinic = await register_terminal(lab, tmp_path, OTHER_CLINIC)
    refused = []
    for sender in (other_clinic, lis(lab, dev_keys)):   # another clinic; the lab itself
        ce_id = await sender.publish(ack(critical, read_back=True))
        [answer] = await lab.events.wait_for(rejection_for(ce_id))
        refused.append(payload(answer)["reason"])
    assert refused == ["forbidden_institution", "forbidden_institution"]
    wrong_order = {**critical, "order_id": "O-not-this-one"}
    ce_id = await lab.terminal.publish(ack(wrong_order, read_back=True))
    [answer] = await lab.events.wait_for(rejection_for(ce_id))
    assert payload(answer)["reason"] == "unknown_critical_value"

    assert await fetchval(lab, "SELECT count(*) FROM critical_calls") == 0
    await move_clock(lab)
    [escalated] = await escalations(lab, critical, 1)
    assert escalated["level"] == 1
    assert not seen(lab, ACKNOWLEDGED)
    # The refusal of the other clinic's ack goes to that clinic, not to the patient's.
    await feed_settled(lab)
    async with clinician(lab, dev_keys, OTHER_CLINIC) as other:
        items = (await other.get("/feed")).json()["items"]
    assert [(i["type"].split(".")[-2], i["data"]["sender"]) for i in items] == [
        ("rejected", other_clinic.signer.source)]
    async with clinician(lab, dev_keys) as own:
        mine = (await own.get("/feed", params={"limit": 500})).json()["items"]
    senders = {i["data"].get("sender") for i in mine if i["type"].endswith("rejected.v1")}
    assert senders == {lab.terminal.signer.source}   # only its own refused ack


async def test_an_amendment_into_the_critical_range_raises_a_critical_value(lab, dev_keys):
    """A verified normal potassium corrected to 6.9 mmol/L is a critical value of
    its own: raised for the new result, with the clock and roster as for any."""
    from labjourney import physician, verified_order

    o, t = await verified_order(lab, dev_keys, ("K",), {"K": "4.2"})
    assert seen(lab, "critical_value.raised.v1", order_id=o.order_id) == []
    [original] = (await one(lab, "report.verified.v1", order_id=o.order_id))["observations"]
    async with physician(lab, dev_keys, user="phys-3") as doctor:
        answer = await doctor.post(f"/orders/{o.order_id}/amend", json={
            "observation_id": original["observation_id"], "value": "6.9",
            "reason": "analytical_error"})
    assert answer.status_code == 200, answer.text
    new_id = answer.json()["observation_id"]
    raised = await one(lab, "critical_value.raised.v1", order_id=o.order_id)
    assert raised["observation_id"] == new_id and raised["critical_id"] == \
        answer.json()["critical_value"]
    assert (raised["test_code"], Decimal(raised["value"]), raised["direction"]) == \
        ("K", Decimal("6.9"), "high")
    assert raised["confirmed_by"] == "phys-3"
    # The clinic's read-back of the corrected value stops its clock.
    await lab.terminal.publish(ack(raised, read_back=True))
    await one(lab, ACKNOWLEDGED, critical_id=raised["critical_id"])

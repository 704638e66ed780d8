"""The clinic's institution-scoped feed: its own orders' events and intake
rejections, in order, by cursor; another clinic sees nothing of them."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import httpx
from labflow import ce_type, collected, order, payload, rejection_for
from labjourney import (
    clinician,
    confirm,
    feed_settled,
    new_patient,
    obs,
    ordered_tube,
    receive,
    report_results,
    verify,
)
from yigongti_contracts.lab.codes import CriticalDirection
from yigongti_contracts.lab.v1 import CriticalValueRaised
from yigongti_kit.auth import issue_token
from yigongti_lab.events import emit


def client(lab, dev_keys, institution: str, roles=("clinician",)) -> httpx.AsyncClient:
    token = issue_token(dev_keys.auth_private_pem, user="u-1", institution=institution,
                        roles=list(roles), audience="lab")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=lab.runtime.app),
                             base_url="http://lab", headers={"Authorization": f"Bearer {token}"})


async def test_feed_carries_own_events_by_cursor_and_nothing_to_another_clinic(lab, dev_keys):
    o = order(dev_keys.institution_id, tests=("K",))
    await lab.terminal.publish(o)
    await lab.terminal.publish(collected(o, tests=("K",)))
    bad = await lab.terminal.publish(collected(o, tests=("GLU",)))  # not ordered: refused
    await lab.events.wait_for(rejection_for(bad))
    await feed_settled(lab)

    async with client(lab, dev_keys, dev_keys.institution_id) as own:
        first = (await own.get("/feed", params={"limit": 2})).json()
        rest = (await own.get("/feed", params={"after": first["next"]})).json()
        empty = (await own.get("/feed", params={"after": rest["next"], "wait": 0.3})).json()
    types = [i["type"].split(".")[-2] for i in first["items"] + rest["items"]]
    assert types == ["accepted", "collection_recorded", "rejected"]
    assert all(i["order_id"] == o.order_id for i in first["items"] + rest["items"])
    assert empty == {"items": [], "next": rest["next"]}

    async with client(lab, dev_keys, "652325-B02") as other:
        assert (await other.get("/feed")).json()["items"] == []
    async with client(lab, dev_keys, dev_keys.institution_id, roles=("auditor",)) as wrong:
        assert (await wrong.get("/feed")).status_code == 403
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=lab.runtime.app),
                                 base_url="http://lab") as anonymous:
        assert (await anonymous.get("/feed")).status_code == 401


def _accepted(o):
    return lambda r: ce_type(r).endswith("order.accepted.v1") and \
        payload(r)["order_id"] == o.order_id


async def test_an_event_committed_late_is_not_passed_over_by_the_cursor(lab, dev_keys):
    """A writer's transaction still open while later events reach the feed: its
    event comes after them, above the cursor the clinic holds, not below it."""
    first = order(dev_keys.institution_id, tests=("K",), patient_ref=new_patient())
    await lab.terminal.publish(first)
    await lab.events.wait_for(_accepted(first))
    await feed_settled(lab)
    async with client(lab, dev_keys, dev_keys.institution_id) as own:
        cursor = (await own.get("/feed", params={"limit": 500})).json()["next"]
        async with lab.pool.acquire() as conn:
            late = conn.transaction()
            await late.start()
            # A critical value of `first`, written by a transaction that commits late.
            await emit(conn, CriticalValueRaised(
                order_id=first.order_id, critical_id=f"CV-{first.order_id}",
                patient_ref=first.patient_ref, ordering_institution=dev_keys.institution_id,
                lab_centre="652325-L01", barcode=f"B{first.order_id[-8:]}",
                observation_id="obs-late", test_code="K", value="6.9", unit="mmol/L",
                direction=CriticalDirection.high, confirmed_by="tech-8",
                raised_at=datetime.now(UTC), escalate_at=datetime.now(UTC)))
            second = order(dev_keys.institution_id, tests=("K",), patient_ref=new_patient())
            await lab.terminal.publish(second)
            await lab.events.wait_for(_accepted(second))
            await feed_settled(lab)
            page = (await own.get("/feed", params={"after": cursor, "limit": 500})).json()
            assert [i["order_id"] for i in page["items"]] == [second.order_id]
            await late.commit()
        await feed_settled(lab)
        after = (await own.get("/feed", params={"after": page["next"]})).json()
    assert [(i["order_id"], i["type"].split(".")[-2]) for i in after["items"]] == [
        (first.order_id, "raised")]


async def test_a_waiting_long_poll_answers_with_what_arrives(lab, dev_keys):
    async with client(lab, dev_keys, dev_keys.institution_id) as own, \
            client(lab, dev_keys, "652325-B02") as other:
        cursor = (await own.get("/feed", params={"limit": 500})).json()["next"]
        other_cursor = (await other.get("/feed", params={"limit": 500})).json()["next"]
        waiting = asyncio.create_task(own.get("/feed", params={"after": cursor, "wait": 20}))
        others = asyncio.create_task(other.get("/feed", params={"after": other_cursor,
                                                                "wait": 1}))
        await asyncio.sleep(0.1)
        o = order(dev_keys.institution_id, tests=("K",), patient_ref=new_patient())
        await lab.terminal.publish(o)
        answer = (await asyncio.wait_for(waiting, 20)).json()
        # Another clinic's long-poll is not answered with it: it times out empty.
        assert (await others).json() == {"items": [], "next": other_cursor}
    assert [(i["order_id"], i["type"].split(".")[-2]) for i in answer["items"]] == [
        (o.order_id, "accepted")]


async def test_the_clinic_sees_results_only_once_verified(lab, dev_keys):
    """Issue 8 item 17: until a physician verifies, every clinic-facing read
    (the feed, the order, the report, the FHIR Bundle) shows only that the
    tube is being tested; a critical value still reaches the clinic once the
    technologist confirms it. Staff keep the preliminary values (the events
    topic's LabResultsReported)."""
    o, t = await ordered_tube(lab, dev_keys, ("K", "NA", "CTNI"))
    await receive(lab, dev_keys, t.barcode)
    # Values no other part of the answers can contain by chance.
    values = {"K": "4.37", "NA": "141.3", "CTNI": "423.7"}   # troponin above its critical limit
    reported = await report_results(lab, dev_keys, t.barcode,
                                    *(obs(c, v) for c, v in values.items()))
    assert {x["code"]: x["value"] for x in reported["observations"]} == values

    async def clinic_reads() -> dict:
        await feed_settled(lab)
        async with clinician(lab, dev_keys) as clinic:
            feed = (await clinic.get("/feed", params={"limit": 500})).json()["items"]
            reads = {path: await clinic.get(path) for path in (
                f"/orders/{o.order_id}", f"/orders/{o.order_id}/report",
                f"/orders/{o.order_id}/fhir")}
        assert all(r.status_code == 200 for r in reads.values()), reads
        return {"feed": [i for i in feed if i["order_id"] == o.order_id],
                **{path: r.json() for path, r in reads.items()}}

    def shown(read) -> set[str]:
        return {c for c, v in values.items() if v in json.dumps(read)}

    def observations(reads: dict) -> list:
        bundle = reads[f"/orders/{o.order_id}/fhir"]
        return [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]

    # Reported, not confirmed: the tube is being tested, nothing more.
    before = await clinic_reads()
    assert {c: shown(read) for c, read in before.items()} == {c: set() for c in before}
    testing = [i for i in before["feed"] if i["type"].endswith(".in_testing.v1")]
    assert [i["data"] for i in testing] == [
        {"order_id": o.order_id, "barcode": t.barcode, "at": testing[0]["data"]["at"]}]
    assert not [i for i in before["feed"] if ".results." in i["type"]]
    assert before[f"/orders/{o.order_id}/report"]["observations"] == []
    assert observations(before) == []

    # Confirmed: the critical troponin goes out, the other values do not.
    await confirm(lab, dev_keys, t.barcode)
    confirmed = await clinic_reads()
    [critical] = [i for i in confirmed["feed"] if i["type"].endswith("critical_value.raised.v1")]
    assert shown(critical) == {"CTNI"}
    assert shown([i for i in confirmed["feed"] if i is not critical]) == set()
    assert not [i for i in confirmed["feed"] if ".results." in i["type"]]
    for path in (f"/orders/{o.order_id}", f"/orders/{o.order_id}/report",
                 f"/orders/{o.order_id}/fhir"):
        assert shown(confirmed[path]) == set(), path

    # Verified: the clinic reads every value, in the feed and in each read.
    await verify(lab, dev_keys, o.order_id)
    after = await clinic_reads()
    [released] = [i for i in after["feed"] if i["type"].endswith("report.verified.v1")]
    assert shown(released) == set(values)
    assert shown(after[f"/orders/{o.order_id}/report"]) == set(values)
    assert shown(after[f"/orders/{o.order_id}/fhir"]) == set(values)
    assert len(observations(after)) == 3

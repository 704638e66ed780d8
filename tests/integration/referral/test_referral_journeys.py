"""Referral journeys on the real broker and database: the closed loop up
(intake) and down (HTTP, follow-ups), refusals answered with IntakeRejected,
scoping over HTTP, and a late record parked then applied."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
from fhir_check import problems
from labflow import payload, signed_raw
from referralflow import (
    COUNTY,
    DAFENG,
    OTHER_COUNTY,
    PREFECTURE,
    TOWNSHIP,
    accept,
    down,
    now,
    of,
    refused,
    up,
)
from yigongti_contracts.referral import v1
from yigongti_contracts.referral.codes import ClosureOutcome, FollowUpFinding, Urgency


async def test_upward_closed_loop_through_intake(referral) -> None:
    request = up()
    rid = request.referral_id
    await referral.send(TOWNSHIP, request)
    opened = (await referral.wait(of(rid, "referral.opened.v1")))[0]
    assert payload(opened)["accept_by"] and payload(opened)["root_referral_id"] == rid
    await referral.send(COUNTY, accept(rid))
    await referral.wait(of(rid, "referral.accepted.v1"))
    await referral.send(TOWNSHIP, v1.PatientDeparted(referral_id=rid, departed_at=now()))
    await referral.wait(of(rid, "patient.in_transit.v1"))
    await referral.send(COUNTY, v1.PatientArrived(referral_id=rid, arrived_at=now()))
    await referral.wait(of(rid, "patient.received.v1"))
    await referral.send(COUNTY, v1.DischargeSummarySubmitted(
        referral_id=rid, summary_id="DS-1", outcome=ClosureOutcome.discharged,
        discharged_at=now() + timedelta(seconds=1)))
    closed = payload((await referral.wait(of(rid, "referral.closed.v1")))[0])
    assert closed["outcome"] == "discharged" and closed["discharge_summary_id"] == "DS-1"
    assert closed["from_institution"] == TOWNSHIP  # the sender learns the outcome

    # A cancellation after the close is refused with its reason.
    ce_id = await referral.send(TOWNSHIP, v1.ReferralCancelled(
        referral_id=rid, reason="condition_improved", cancelled_at=now()))
    answer = payload((await referral.wait(refused(ce_id)))[0])
    assert answer["reason"] == "case_closed"

    # Both ends' feeds carry the close; the sender's HTTP view shows it.
    for institution in (TOWNSHIP, COUNTY):
        async with referral.http(institution) as client:
            feed = (await client.get("/feed", params={"limit": 500})).json()
            assert any(i["referral_id"] == rid and i["type"].endswith("referral.closed.v1")
                       for i in feed["items"])
    async with referral.http(TOWNSHIP) as client:
        view = (await client.get(f"/referrals/{rid}")).json()
        assert view["state"] == "closed" and view["outcome"] == "discharged"
        assert [c["referral_id"] for c in view["chain"]] == [rid]
        bundle = await client.get(f"/referrals/{rid}/fhir")
        assert bundle.headers["content-type"].startswith("application/fhir+json")
        task = bundle.json()["entry"][1]["resource"]
        assert task["resourceType"] == "Task" and task["status"] == "completed"
        assert problems([bundle.json()]) == [[]]


async def test_refusals_who_may_refer_to_whom(referral) -> None:
    cases = [
        (up(to=OTHER_COUNTY), "outside_community"),
        (up(to=COUNTY, capability=None, frm=COUNTY), "same_institution"),
        (up(to="652301-L01"), "not_a_clinical_institution"),
        (up(to=PREFECTURE), "skips_level"),
        (down(care_plan=None), "care_plan_missing"),
        (up(frm=DAFENG, to=OTHER_COUNTY), "lacks_capability"),  # no chest-pain centre there
    ]
    sent = []
    for request, reason in cases:
        sender = request.from_institution
        sent.append((await referral.send(sender, request), reason))
    for ce_id, reason in sent:
        answer = payload((await referral.wait(refused(ce_id)))[0])
        assert answer["reason"] == reason, answer
    # A terminal of another institution cannot open a referral in the township's name.
    ce_id = await referral.send(COUNTY, up())
    assert payload((await referral.wait(refused(ce_id)))[0])["reason"] == \
        "forbidden_institution"


async def test_downward_loop_over_http_with_follow_ups_and_scoping(referral) -> None:
    request = down()
    rid = request.referral_id
    await referral.send(COUNTY, request)
    await referral.wait(of(rid, "referral.opened.v1"))
    async with referral.http(DAFENG) as stranger:  # another county's township
        assert (await stranger.get(f"/referrals/{rid}")).status_code == 404
        assert (await stranger.post(f"/referrals/{rid}/accept")).status_code == 404
    async with referral.http(COUNTY) as county:
        # The sender may not accept its own referral.
        answer = await county.post(f"/referrals/{rid}/accept")
        assert answer.status_code == 403 and answer.json()["detail"] == "forbidden_institution"
        assert (await county.get("/referrals", params={"side": "outgoing"})).json()["referrals"]
    async with referral.http(TOWNSHIP) as township:
        assert (await township.post(f"/referrals/{rid}/accept")).status_code == 200
        arrival = await township.post(f"/referrals/{rid}/arrival", json={})
        assert arrival.status_code == 200 and arrival.json()["state"] == "closed"
        due = (await township.get("/follow-ups/due")).json()["follow_ups"]
        assert sorted(d["day"] for d in due if d["referral_id"] == rid) == [7, 30]
        done = await township.post(f"/referrals/{rid}/follow-ups/7",
                                   json={"finding": FollowUpFinding.stable.value})
        assert done.status_code == 200 and done.json()["events"] == ["FollowUpDone"]
        again = await township.post(f"/referrals/{rid}/follow-ups/8",
                                    json={"finding": "stable"})
        assert again.status_code == 409 and again.json()["detail"] == "unknown_round"
    closed = payload((await referral.wait(of(rid, "referral.closed.v1")))[0])
    assert closed["outcome"] == "care_taken_over" and closed["direction"] == "down"
    scheduled = await referral.wait(of(rid, "follow_up.scheduled.v1"), count=2)
    assert {payload(s)["handed_over_by"] for s in scheduled} == {"doc-c1"}
    await referral.wait(of(rid, "follow_up.done.v1"))


async def test_a_late_arrival_is_parked_then_applied_with_the_departure_inferred(referral) -> None:
    request = up(urgency=Urgency.routine)
    rid = request.referral_id
    # The arrival and the acceptance come before the request (a township's
    # terminal was offline): parked in the case, applied when the request arrives.
    await referral.send(COUNTY, v1.PatientArrived(referral_id=rid, arrived_at=now()))
    await referral.send(COUNTY, accept(rid))
    await referral.send(TOWNSHIP, request)
    transit = payload((await referral.wait(of(rid, "patient.in_transit.v1")))[0])
    assert transit["inferred"] is True and transit["departed_at"] is None
    received = payload((await referral.wait(of(rid, "patient.received.v1")))[0])
    assert received["departure_inferred"] is True


async def test_strict_intake_and_validity(referral) -> None:
    # A field the contract does not have (a name) is refused before anything is read.
    request = up()
    raw = request.model_dump(mode="json") | {"patient_name": "x"}
    terminal = referral.terminals[TOWNSHIP]
    bad = signed_raw(terminal.signer, request.CE_TYPE, json.dumps(raw).encode(),
                     key=request.referral_id)
    await terminal.producer.send_and_wait(terminal.topic, key=bad.key, value=bad.value,
                                          headers=bad.headers)
    answer = payload((await referral.wait(refused(bad.ce_id)))[0])
    assert answer["reason"] == "schema_violation"

    # An arrival after the referral's validity (3 months) is refused.
    late = up(urgency=Urgency.routine)
    await referral.send(TOWNSHIP, late)
    await referral.send(COUNTY, accept(late.referral_id))
    await referral.wait(of(late.referral_id, "referral.accepted.v1"))
    ce_id = await referral.send(COUNTY, v1.PatientArrived(
        referral_id=late.referral_id, arrived_at=now() + timedelta(days=100)))
    assert payload((await referral.wait(refused(ce_id)))[0])["reason"] == "validity_ended"


async def test_another_institution_sees_nothing_of_a_referral(referral) -> None:
    request = up()
    await referral.send(TOWNSHIP, request)
    await referral.wait(of(request.referral_id, "referral.opened.v1"))
    async with referral.http(DAFENG) as stranger:
        for side in ("incoming", "outgoing"):
            listed = (await stranger.get("/referrals", params={"side": side})).json()
            assert request.referral_id not in {r["referral_id"] for r in listed["referrals"]}
        feed = (await stranger.get("/feed", params={"limit": 500})).json()["items"]
        assert request.referral_id not in {i["referral_id"] for i in feed}
        for path in ("", "/attachments", "/fhir", "/discharge-summary"):
            assert (await stranger.get(f"/referrals/{request.referral_id}{path}")).status_code \
                == 404
        assert (await stranger.post(f"/referrals/{request.referral_id}/cancel",
                                    json={"reason": "other"})).status_code == 404


async def test_leakage_and_quality_metrics_are_exported(referral) -> None:
    request = down()
    await referral.send(COUNTY, request)
    await referral.send(TOWNSHIP, accept(request.referral_id))
    await referral.send(TOWNSHIP, v1.PatientArrived(referral_id=request.referral_id,
                                                    arrived_at=now()))
    await referral.wait(of(request.referral_id, "referral.closed.v1"))
    url = f"http://127.0.0.1:{referral.runtime.metrics_port}/metrics"
    async with httpx.AsyncClient() as client:
        text = (await client.get(url)).text
    assert "referral_closed" in text and "referral_acceptance_time" in text
    async with referral.http(COUNTY) as county:
        figures = (await county.get("/referral-metrics")).json()
    assert figures["as_sender"]["closed"] >= 1
    assert figures["as_sender"]["median_acceptance_minutes"] is not None

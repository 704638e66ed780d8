"""Deadlines as durable timers on the database clock (their own service:
these tests move its clock): the acceptance deadline fires ReferralExpired
once, across a restart, and proposes the next capable institution, which the
sender confirms (the chain kept as parent and child); an emergency past its
deadline is re-routed at once; a follow-up round not recorded in time is
missed and the county doctor told; a patient in transit past the expected
time raises the alert, then is lost."""

from __future__ import annotations

from datetime import timedelta

import pytest_asyncio
from labflow import payload
from referralflow import COUNTY, TOWNSHIP, accept, down, now, of, start_referral, up
from yigongti_contracts.referral import v1
from yigongti_contracts.referral.codes import Urgency


@pytest_asyncio.fixture(scope="module")
async def referral(database_url, kafka_bootstrap, broker_kind, dev_keys, tmp_path_factory):
    service, stop = await start_referral(
        database_url=database_url, kafka_bootstrap=kafka_bootstrap, broker_kind=broker_kind,
        dev_keys=dev_keys, directory=tmp_path_factory.mktemp("deadlines"))
    try:
        yield service
    finally:
        await stop()


async def test_expiry_fires_once_across_a_restart_and_the_reroute_is_confirmed(referral) -> None:
    request = up(urgency=Urgency.routine)
    rid = request.referral_id
    await referral.send(TOWNSHIP, request)
    await referral.wait(of(rid, "referral.opened.v1"))
    # The service is down when the routine deadline (48 h) passes; it fires on start.
    await referral.restart(lambda: referral.shift_clock(timedelta(hours=49)))
    expired = await referral.wait(of(rid, "referral.expired.v1"))
    proposed = payload((await referral.wait(of(rid, "reroute.proposed.v1")))[0])
    target = proposed["proposed_institution"]
    assert target.startswith("652300-P")  # a prefecture hospital with a chest-pain centre
    assert payload(expired[0])["from_institution"] == TOWNSHIP  # the sender is told

    # The sender confirms: a request naming the parent opens the child.
    child = up(urgency=Urgency.routine, to=target, patient=request.patient_ref,
               parent_referral_id=rid)
    await referral.send(TOWNSHIP, child)
    await referral.wait(of(child.referral_id, "referral.opened.v1"))
    rerouted = payload((await referral.wait(of(rid, "referral.rerouted.v1")))[0])
    assert rerouted["child_referral_id"] == child.referral_id and rerouted["at_once"] is False
    async with referral.http(TOWNSHIP) as township:
        view = (await township.get(f"/referrals/{child.referral_id}")).json()
    assert [c["referral_id"] for c in view["chain"]] == [rid, child.referral_id]
    assert view["parent_referral_id"] == rid and view["root_referral_id"] == rid
    # Once: another restart and more time fire nothing more for it.
    await referral.restart()
    await referral.shift_clock(timedelta(hours=1))
    async with referral.pool.acquire() as conn:
        assert await conn.fetchval(
            """SELECT count(*) FROM timers WHERE key = $1 AND fired_at IS NOT NULL""",
            f"{rid}/acceptance") == 1
    assert len(referral.events.of_type("referral.expired.v1")) == \
        len({payload(r)["referral_id"] for r in referral.events.of_type("referral.expired.v1")})


async def test_an_emergency_past_its_deadline_is_rerouted_at_once(referral) -> None:
    request = up(urgency=Urgency.emergency)
    rid = request.referral_id
    await referral.send(TOWNSHIP, request)
    await referral.wait(of(rid, "referral.opened.v1"))
    await referral.shift_clock(timedelta(minutes=31))
    await referral.wait(of(rid, "referral.expired.v1"))
    rerouted = payload((await referral.wait(of(rid, "referral.rerouted.v1")))[0])
    assert rerouted["at_once"] is True and rerouted["to_institution"].startswith("652300-P")
    await referral.wait(of(rerouted["child_referral_id"], "referral.opened.v1"))


async def test_in_transit_alert_then_lost(referral) -> None:
    request = up(urgency=Urgency.urgent)
    rid = request.referral_id
    await referral.send(TOWNSHIP, request)
    await referral.send(COUNTY, accept(rid))
    async with referral.pool.acquire() as conn:
        departed = await conn.fetchval("SELECT db_now()")
    await referral.send(TOWNSHIP, v1.PatientDeparted(referral_id=rid, departed_at=departed))
    await referral.wait(of(rid, "patient.in_transit.v1"))
    await referral.shift_clock(timedelta(days=3))
    await referral.wait(of(rid, "patient.in_transit_overdue.v1"))
    lost = payload((await referral.wait(of(rid, "referral.lost.v1")))[0])
    assert lost["reason"] == "not_received"
    async with referral.http(TOWNSHIP) as township:
        metrics = (await township.get("/referral-metrics")).json()
    assert metrics["as_sender"]["never_received"] >= 1


async def test_a_follow_up_round_not_recorded_is_missed_and_the_county_told(referral) -> None:
    request = down()
    rid = request.referral_id
    await referral.send(COUNTY, request)
    await referral.send(TOWNSHIP, accept(rid))
    await referral.send(TOWNSHIP, v1.PatientArrived(referral_id=rid, arrived_at=now()))
    await referral.wait(of(rid, "referral.closed.v1"))
    await referral.shift_clock(timedelta(days=80))
    missed = await referral.wait(of(rid, "follow_up.missed.v1"), count=2)
    assert {payload(m)["round_day"] for m in missed} == {7, 30}
    assert {payload(m)["handed_over_by"] for m in missed} == {"doc-c1"}
    async with referral.http(COUNTY) as county:
        feed = (await county.get("/feed", params={"limit": 500})).json()["items"]
        assert sum(i["referral_id"] == rid and i["type"].endswith("follow_up.missed.v1")
                   for i in feed) == 2
        metrics = (await county.get("/referral-metrics")).json()
    assert metrics["as_sender"]["follow_ups_missed"] >= 2

"""Deadlines as durable timers on the database clock (their own service:
these tests move its clock): the acceptance deadline fires ReferralExpired
once, across a restart, and proposes the next capable institution, which the
sender confirms (the chain kept as parent and child); an emergency past its
deadline is re-routed at once; a follow-up round not recorded in time is
missed and the county doctor told; a patient in transit past the expected
time raises the alert, then is lost."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import timedelta

import pytest_asyncio
from labflow import ce_type, payload
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


async def test_an_emergency_that_left_first_is_reminded_of_its_paperwork(referral) -> None:
    request = up(urgency=Urgency.emergency)
    rid = request.referral_id
    await referral.send(TOWNSHIP, request)
    await referral.wait(of(rid, "referral.opened.v1"))
    async with referral.pool.acquire() as conn:
        at = await conn.fetchval("SELECT db_now()")
    await referral.send(TOWNSHIP, v1.PatientDeparted(referral_id=rid, departed_at=at))
    transit = payload((await referral.wait(of(rid, "patient.in_transit.v1")))[0])
    assert transit["paperwork_pending"] is True
    await referral.send(COUNTY, v1.PatientArrived(referral_id=rid,
                                                  arrived_at=at + timedelta(minutes=40)))
    await referral.wait(of(rid, "patient.received.v1"))
    await referral.shift_clock(timedelta(hours=25))
    await referral.wait(of(rid, "paperwork.overdue.v1"))
    await referral.send(COUNTY, accept(rid))
    accepted = payload((await referral.wait(of(rid, "referral.accepted.v1")))[0])
    assert accepted["after_departure"] is True


# --- one shuffled and duplicated stream through the real broker ---------------------

TERMINAL_EVENTS = {"closed": "referral.closed.v1", "declined": "referral.declined.v1",
                   "expired": "referral.expired.v1", "withdrawn": "referral.withdrawn.v1",
                   "lost": "referral.lost.v1"}


def _journey(rng: random.Random, t0) -> list[tuple[str, object]]:
    """(sending institution, record) of one random case, in journey order."""
    request = rng.choice([
        lambda: up(urgency=Urgency.emergency), lambda: up(urgency=Urgency.urgent),
        lambda: up(urgency=Urgency.routine), down])()
    rid, frm, to = request.referral_id, request.from_institution, request.to_institution
    at = lambda minutes: t0 + timedelta(minutes=minutes)  # noqa: E731
    out: list[tuple[str, object]] = [(frm, request)]
    decision = rng.choice(["accept", "accept", "decline", "both", "none"])
    if decision in ("accept", "both"):
        out.append((to, v1.ReferralDecision(referral_id=rid, decision="accept",
                                            decided_by="coord-1", decided_at=at(5))))
    if decision in ("decline", "both"):
        out.append((to, v1.ReferralDecision(referral_id=rid, decision="decline",
                                            decided_by="coord-1", decided_at=at(6),
                                            reason="no_bed")))
    if rng.random() < 0.8:
        out.append((frm, v1.PatientDeparted(referral_id=rid, departed_at=at(10))))
    if rng.random() < 0.8:
        out.append((to, v1.PatientArrived(referral_id=rid, arrived_at=at(rng.choice([5, 60])))))
    if rng.random() < 0.6:
        out.append((to, v1.DischargeSummarySubmitted(
            referral_id=rid, summary_id="DS-1", outcome="discharged", discharged_at=at(600))))
    for day in rng.sample([7, 30, 14], rng.randint(0, 2)):
        out.append((to, v1.FollowUpRecorded(referral_id=rid, round_day=day, finding="stable",
                                            seen_at=at(60 * 24 * day))))
    if rng.random() < 0.3:
        out.append((frm, v1.ReferralCancelled(referral_id=rid, reason="condition_improved",
                                              cancelled_at=at(3))))
    return out


async def _quiet(referral, seconds: float = 2.0) -> None:
    """Until nothing new is published for `seconds`, no timer is due and the
    outbox is empty."""
    last, stable_since = -1, asyncio.get_running_loop().time()
    for _ in range(600):
        async with referral.pool.acquire() as conn:
            due = await conn.fetchval(
                """SELECT count(*) FROM timers WHERE fired_at IS NULL AND cancelled_at IS NULL
                     AND due_at <= db_now()""")
            unsent = await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        count = len(referral.events.records)
        loop_now = asyncio.get_running_loop().time()
        if count != last or due or unsent:
            last, stable_since = count, loop_now
        elif loop_now - stable_since >= seconds:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the service never went quiet")


async def test_a_shuffled_duplicated_stream_ends_every_case_in_one_terminal_state(
        referral) -> None:
    rng = random.Random(20261202)
    async with referral.pool.acquire() as conn:
        t0 = await conn.fetchval("SELECT db_now()")
    journeys = [_journey(rng, t0) for _ in range(12)]
    stream = [(inst, record, str(uuid.uuid4())) for j in journeys for inst, record in j]
    stream += rng.sample(stream, len(stream) // 4)  # the same records again (same ce_id)
    stream += [(i, r, str(uuid.uuid4())) for i, r, _ in rng.sample(stream, 5)]  # new ce_ids
    rng.shuffle(stream)
    for institution, record, ce_id in stream:
        await referral.terminals[institution].publish(record, ce_id=ce_id)
    await _quiet(referral)
    for _ in range(4):  # every timer fires, and those the firings set (re-routes at once)
        await referral.shift_clock(timedelta(days=200))
        await _quiet(referral)

    ids = {j[0][1].referral_id for j in journeys}
    async with referral.pool.acquire() as conn:
        rows = await conn.fetch("SELECT referral_id, state, root_referral_id FROM cases "
                                "WHERE root_referral_id = ANY($1::text[])", list(ids))
    states = {r["referral_id"]: r["state"] for r in rows}
    assert ids <= set(states)  # every request opened its case
    for rid, state in states.items():
        assert state in TERMINAL_EVENTS, (rid, state)
        told = [r for r in referral.events.records
                if ce_type(r).endswith(TERMINAL_EVENTS[state])
                and payload(r)["referral_id"] == rid]
        assert len(told) == 1, (rid, state, len(told))  # told once, the sender named
        assert payload(told[0])["from_institution"]

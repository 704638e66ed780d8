"""The reading centre's worklist: ordered by priority then due time; claims of the
next or a chosen study (a 15-minute lease), release; readers scoped to their
centre and modalities (out of scope = missing, recorded); and concurrent claims
from two service processes on one database with exactly one winner each."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from diagflow import ECG_CENTRE, IMAGING_CENTRE
from labflow import ce_type, payload
from yigongti_deploy.stack import ServiceProcess


async def _drain(dx) -> list[str]:
    """Claim everything claimable (so a test starts from an empty queue)."""
    claimed = []
    async with dx.reader(user="DRAIN") as reader:
        while (item := (await reader.post("/worklist/claim-next")).json()["claimed"]):
            claimed.append(item["request_id"])
    return claimed


async def test_triage_and_ordering_by_priority_then_due_time(dx):
    await _drain(dx)
    routine = await dx.queued(priority_hint="routine")
    urgent = await dx.queued(priority_hint="urgent")
    stat = await dx.queued(priority_hint="stat")
    chest_old = await dx.queued(indications=("R07.4",),
                                symptom_onset=datetime.now(UTC) - timedelta(hours=20))
    clinician = await dx.queued(clinician_priority="stat")
    assert [q["priority"] for q in (routine, urgent, stat, chest_old, clinician)] == [
        "routine", "urgent", "stat", "urgent", "stat"]
    assert stat["priority_reasons"] == ["suspected_stroke"]
    assert clinician["priority_reasons"] == ["clinician_stat"]
    due = {q["request_id"]: datetime.fromisoformat(q["due_at"]) -
           datetime.fromisoformat(q["queued_at"]) for q in (routine, urgent, stat)}
    assert due[stat["request_id"]] == timedelta(minutes=10)
    assert due[urgent["request_id"]] == timedelta(minutes=30)
    assert due[routine["request_id"]] == timedelta(hours=24)

    async with dx.reader() as reader:
        items = (await reader.get("/worklist")).json()["items"]
    order = [i["request_id"] for i in items]
    assert order == [stat["request_id"], clinician["request_id"], urgent["request_id"],
                     chest_old["request_id"], routine["request_id"]]
    assert await _drain(dx) == order


async def test_claim_chosen_release_and_claim_next(dx):
    await _drain(dx)
    first = await dx.queued(priority_hint="urgent")
    second = await dx.queued(priority_hint="routine")
    async with dx.reader("STAFF-A") as a, dx.reader("STAFF-B") as b:
        chosen = await a.post(f"/requests/{second['request_id']}/claim")
        assert chosen.status_code == 200
        lease = datetime.fromisoformat(chosen.json()["lease_until"])
        assert timedelta(minutes=14) < lease - datetime.now(UTC) <= timedelta(minutes=15, seconds=5)
        assert (await b.post(f"/requests/{second['request_id']}/claim")).status_code == 409
        assert (await b.post(f"/requests/{second['request_id']}/release")).status_code == 409
        nxt = (await b.post("/worklist/claim-next")).json()["claimed"]
        assert nxt["request_id"] == first["request_id"]
        assert (await b.post("/worklist/claim-next")).json()["claimed"] is None
        assert (await a.post(f"/requests/{second['request_id']}/release")).status_code == 200
        again = (await b.post("/worklist/claim-next")).json()["claimed"]
        assert again["request_id"] == second["request_id"]
    (released,) = await dx.wait("diagnosis.released.v1", second["request_id"])
    assert released["reason"] == "released" and released["reader"] == "STAFF-A"


async def test_readers_are_scoped_to_their_centre_and_modalities(dx):
    await _drain(dx)
    q = await dx.queued()
    rid = q["request_id"]
    async with dx.reader("STAFF-X", centre="652301-E01") as other_centre, \
            dx.reader("STAFF-Y", reads=("ct",)) as unqualified, \
            dx.reader("STAFF-Z", centre=IMAGING_CENTRE, reads=("ct",)) as imaging:
        for reader in (other_centre, unqualified, imaging):
            answer = await reader.post(f"/requests/{rid}/claim")
            missing = await reader.post("/requests/DX-none/claim")
            assert answer.status_code == missing.status_code == 404
            assert answer.json() == missing.json()
            assert (await reader.post("/worklist/claim-next")).json()["claimed"] is None
            items = (await reader.get("/worklist")).json()["items"]
            assert rid not in [i["request_id"] for i in items]
    recorded = await dx.fetch("SELECT user_id FROM scope_refusals WHERE request_id = $1", rid)
    assert sorted(r["user_id"] for r in recorded) == ["STAFF-X", "STAFF-Y", "STAFF-Z"]
    async with dx.client(ECG_CENTRE, ["clinician"]) as not_reader:
        assert (await not_reader.post("/worklist/claim-next")).status_code == 403


async def test_a_claim_skips_a_study_whose_row_is_held_and_a_chosen_claim_waits(dx):
    """One side holds a request's lock (a cancellation in flight) while readers
    claim: claim-next passes over it; a claim of that very study waits, and
    after the withdrawal commits it is answered 409."""
    await _drain(dx)
    held = await dx.queued(priority_hint="stat")
    other = await dx.queued(priority_hint="routine")
    async with dx.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SELECT 1 FROM requests WHERE request_id = $1 FOR UPDATE",
                           held["request_id"])
        async with dx.reader("STAFF-A") as a, dx.reader("STAFF-B") as b:
            nxt = (await a.post("/worklist/claim-next")).json()["claimed"]
            assert nxt["request_id"] == other["request_id"]
            waiting = asyncio.create_task(b.post(f"/requests/{held['request_id']}/claim"))
            await asyncio.sleep(0.5)
            assert not waiting.done()
            await conn.execute("UPDATE requests SET status = 'withdrawn' WHERE request_id = $1",
                               held["request_id"])
            await tx.commit()
            assert (await waiting).status_code == 409


@pytest.mark.timeout(180)
async def test_concurrent_claims_from_two_service_processes_one_winner_each(dx, tmp_path):
    await _drain(dx)
    studies = [await dx.queued(priority_hint=p) for p in ("stat", "urgent", "routine") * 3]
    ids = {q["request_id"] for q in studies}
    env = dict(dx.env, HTTP_PORT=str(__import__("yigongti_deploy.embedded",
                                                fromlist=["free_port"]).free_port()))
    second = ServiceProcess("diagnosis", env, tmp_path / "second.log",
                            script="yigongti-diagnosis")
    await second.start(ready_timeout=90)
    try:
        from yigongti_kit.auth import issue_token

        def headers(user: str) -> dict:
            return {"Authorization": "Bearer " + issue_token(
                dx.dev_keys.auth_private_pem, user=user, institution=ECG_CENTRE,
                roles=["diagnostician", "reads_ecg"], audience="diagnosis")}

        async with httpx.AsyncClient(base_url=second.url, timeout=60) as remote, \
                dx.reader("R-local") as local:
            # Everyone grabs the same study first, then the next ones.
            target = next(q["request_id"] for q in studies if q["priority"] == "stat")
            chosen = await asyncio.gather(*(
                [local.post(f"/requests/{target}/claim") for _ in range(10)]
                + [remote.post(f"/requests/{target}/claim", headers=headers(f"R{i}"))
                   for i in range(10)]))
            assert Counter(r.status_code for r in chosen) == Counter({200: 1, 409: 19})
            nexts = await asyncio.gather(*(
                [local.post("/worklist/claim-next") for _ in range(15)]
                + [remote.post("/worklist/claim-next", headers=headers(f"N{i}"))
                   for i in range(15)]))
        won = [r.json()["claimed"]["request_id"] for r in nexts
               if r.status_code == 200 and r.json()["claimed"]]
        assert all(r.status_code == 200 for r in nexts)
        assert sorted(won + [target]) == sorted(ids)  # each study exactly once
        claimed_events = await dx.events.wait_for(
            lambda r: ce_type(r).endswith("diagnosis.claimed.v1")
            and payload(r)["request_id"] in ids, count=len(ids))
        per_study = Counter(payload(r)["request_id"] for r in claimed_events)
        assert set(per_study.values()) == {1}
    finally:
        await second.stop()

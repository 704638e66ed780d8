"""The case lock (the rule in yigongti_referral/locking.py): an HTTP action,
an intake handler and a timer handler on a case each wait while another
transaction holds that case's lock, then finish on the case as that
transaction left it. The test holds the lock from its own connection,
changing the case meanwhile, starts the other side, sees it wait, commits,
and sees it decide on what was committed."""

from __future__ import annotations

import asyncio
import uuid

from referralflow import COUNTY, TOWNSHIP, accept, now, of, up
from yigongti_contracts.referral.codes import Urgency
from yigongti_referral import handlers, store, transitions
from yigongti_referral.facts import PatientDeparted

CASE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('case' || chr(31) || $1, 0))"


async def _opened(referral, urgency: Urgency = Urgency.urgent) -> str:
    request = up(urgency=urgency)
    await referral.send(TOWNSHIP, request)
    await referral.wait(of(request.referral_id, "referral.opened.v1"))
    return request.referral_id


async def _still_waiting(task: asyncio.Task) -> None:
    await asyncio.sleep(0.5)
    assert not task.done(), "it did not wait for the case lock"


async def test_an_http_decline_waits_for_the_acceptance_holding_the_lock(referral) -> None:
    rid = await _opened(referral)
    async with referral.pool.acquire() as holder:
        tx = holder.transaction()
        await tx.start()
        # This side holds the lock and accepts (as an intake record would).
        await holder.execute(CASE_LOCK, rid)
        await transitions.run(holder, handlers.to_fact(accept(rid)), fact_id=str(uuid.uuid4()),
                              sender=COUNTY)

        async def decline():
            async with referral.http(COUNTY) as county:
                return await county.post(f"/referrals/{rid}/decline", json={"reason": "no_bed"})

        task = asyncio.create_task(decline())
        await _still_waiting(task)
        await tx.commit()
    answer = await asyncio.wait_for(task, 10)
    # It decided on the committed acceptance: a decline after it is refused.
    assert answer.status_code == 409 and answer.json()["detail"] == "already_accepted"


async def test_a_timer_waits_for_a_departure_holding_the_lock(referral) -> None:
    rid = await _opened(referral, Urgency.emergency)
    async with referral.pool.acquire() as conn:
        timer = await conn.fetchrow(
            "SELECT * FROM timers WHERE kind = $1 AND key = $2",
            transitions.TIMER_KIND, transitions.timer_key(rid, "acceptance"))
    assert timer is not None
    async with referral.pool.acquire() as holder:
        tx = holder.transaction()
        await tx.start()
        await holder.execute(CASE_LOCK, rid)
        # An emergency leaves before its acceptance: in transit, the acceptance timer cancelled.
        await transitions.run(holder, PatientDeparted(rid, now()), fact_id=str(uuid.uuid4()),
                              sender=TOWNSHIP)

        async def fire():
            async with referral.pool.acquire() as conn, conn.transaction():
                await transitions.on_timer(conn, timer)

        task = asyncio.create_task(fire())
        await _still_waiting(task)
        await tx.commit()
    await asyncio.wait_for(task, 10)
    async with referral.pool.acquire() as conn:
        case = await store.case(conn, rid)
    # The timer saw the committed departure and did not expire the case.
    assert case.state.value == "in_transit" and case.paperwork_pending

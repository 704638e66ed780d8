"""The written lock rule (locking.py), held open on one side while the other
runs: a settlement waits for the person's lock; a charge waits for the
visit's lock held by a settlement; a retried outBizNo waits for the first."""

from __future__ import annotations

import asyncio

from settlementflow import enrol, line, verify_face
from yigongti_settlement import locking


async def _waiting(st) -> int:
    async with st.pool.acquire() as conn:
        return await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")


async def test_a_settlement_waits_for_the_person_lock_then_reads_what_it_left(settlement):
    st = settlement
    _, ec, ref, face = await enrol(st)
    async with st.client() as counter:
        obn, r = await verify_face(st, counter, ec, face, visit="VIS-LK1",
                                   terminal=st.dev_keys.terminal_id)
        async with st.pool.acquire() as conn:
            person_id = await conn.fetchval(
                "SELECT person_id FROM person_refs WHERE patient_ref = $1", ref)
        holder = await st.pool.acquire()
        tx = holder.transaction()
        await tx.start()
        try:
            await locking.lock_person(holder, person_id)
            # While the lock is held, the holder writes accumulators the settlement must see.
            await holder.execute(
                """INSERT INTO accumulators (person_id, year, figures)
                   VALUES ($1, extract(year FROM now())::int, '{"basic_paid": "1.00",
                           "out_of_pocket": "2.00"}')""", person_id)
            task = asyncio.create_task(counter.post("/settlements", json={
                "out_biz_no": obn, "visit_id": "VIS-LK1", "setting": "outpatient",
                "lines": [line(price="100.00")],
                "settlement_token": r.json()["settlement_token"]}))
            for _ in range(100):
                if await _waiting(st):
                    break
                await asyncio.sleep(0.02)
            assert await _waiting(st) >= 1
            await asyncio.sleep(0.2)
            assert not task.done()  # blocked on the person's lock
            await tx.commit()
        except BaseException:
            await tx.rollback()
            raise
        finally:
            await st.pool.release(holder)
        answer = (await asyncio.wait_for(task, 10)).json()
    before = answer["steps"][1]["params"]
    assert before["limit_left_before"] != ""  # the step ran after the lock was released
    async with st.pool.acquire() as conn:
        figures = await conn.fetchval(
            "SELECT figures FROM accumulators WHERE person_id = $1", person_id)

    from decimal import Decimal
    assert Decimal(figures["basic_paid"]) == Decimal("1.00") + Decimal(answer["basic"])


async def test_a_retried_out_biz_no_waits_for_the_first_and_gets_its_answer(settlement):
    st = settlement
    _, ec, ref, face = await enrol(st)
    async with st.client() as counter:
        obn, r = await verify_face(st, counter, ec, face, visit="VIS-LK2",
                                   terminal=st.dev_keys.terminal_id)
        body = {"out_biz_no": obn, "visit_id": "VIS-LK2", "setting": "outpatient",
                "lines": [line(price="50.00")], "settlement_token": r.json()["settlement_token"]}
        first, second = await asyncio.gather(counter.post("/settlements", json=body),
                                             counter.post("/settlements", json=body))
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    async with st.pool.acquire() as conn:
        assert await conn.fetchval(
            "SELECT count(*) FROM settlements WHERE out_biz_no = $1", obn) == 1

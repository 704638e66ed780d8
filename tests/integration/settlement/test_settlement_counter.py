"""The counter's path on the real broker and database: face (sandbox) →
token → the three payers' breakdown; retries, refusals, the fallbacks,
concurrency and reversal."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from labflow import payload
from settlementflow import (
    COUNTER_H01,
    HOSPITAL,
    REVOKED,
    enrol,
    line,
    out_biz_no,
    template,
    verify_face,
)
from yigongti_contracts.settlement import credentials


def _of(st, suffix: str, settlement_id: str) -> list:
    return [r for r in st.events.of_type(suffix) if payload(r)["settlement_id"] == settlement_id]


async def test_face_settles_once_and_adds_up(settlement):
    st = settlement
    nid, ec, ref, face = await enrol(st, assistance="low_income")
    async with st.client() as counter:
        obn, r = await verify_face(st, counter, ec, face, visit="VIS-A1",
                                   terminal=st.dev_keys.terminal_id)
        assert r.status_code == 200, r.text
        v = r.json()
        assert v["patient_ref"] == ref and v["status"] == "verified"
        body = {"out_biz_no": obn, "visit_id": "VIS-A1", "settlement_token": v["settlement_token"],
                "setting": "outpatient",
                "lines": [line(price="300.00"), line("250302001", "80.00", category="b"),
                          line("X-1", "20.00", category="c")]}
        first = await counter.post("/settlements", json=body)
        assert first.status_code == 200, first.text
        done = first.json()
        parts = sum(Decimal(done[k]) for k in ("basic", "critical_illness",
                                                "large_amount_subsidy", "assistance",
                                                "out_of_pocket"))
        assert parts == Decimal(done["total"]) == Decimal("400.00")
        assert "您本次需支付" in done["explanation"]
        # A retry (the answer timed out at the counter) gets the same answer, once.
        again = await counter.post("/settlements", json=body)
        assert again.json() == done
        queried = await counter.get(f"/settlements/{obn}")
        assert queried.json()["settlement_id"] == done["settlement_id"]
        bundle = await counter.get(f"/settlements/{obn}/fhir")
        assert bundle.headers["content-type"].startswith("application/fhir+json")
        from fhir_check import problems
        assert problems([bundle.json()]) == [[]]
        # The token was single use: a new outBizNo with it is refused.
        other = await counter.post("/settlements", json={**body, "out_biz_no": out_biz_no()})
        assert other.status_code == 403 and other.json()["detail"] == "token_invalid"
        # The retried verify gets the same answer, the same token included.
        r2 = await counter.post("/identity/verify", json={
            "out_biz_no": obn, "visit_id": "VIS-A1", "credential_type": "face",
            "credential": r.request and json.loads(r.request.content)["credential"]})
        assert r2.json() == v
    await st.events.wait_for(lambda rec: rec in _of(st, "settlement.completed.v1",
                                                    done["settlement_id"]))
    assert len(_of(st, "settlement.completed.v1", done["settlement_id"])) == 1
    assert len(_of(st, "identity.verified.v1", done["settlement_id"])) == 1
    async with st.pool.acquire() as conn:
        stored = await conn.fetchval("SELECT breakdown FROM settlements WHERE settlement_id = $1",
                                     done["settlement_id"])
        from yigongti_settlement.handlers import recompute
        assert await recompute(conn, done["settlement_id"]) == stored


async def test_each_identity_refusal_has_its_reason(settlement):
    st = settlement
    _, ec, _, face = await enrol(st)
    _, ec2, _, face2 = await enrol(st)
    me = st.dev_keys.terminal_id
    forged = st.sandbox.compare(ec, face, 0.99, me)
    forged["payload"]["ec_index_no"] = ec2  # altered after signing
    replayed = st.sandbox.compare(ec, face, 0.99, me)
    stale = st.sandbox.compare(ec, face, 0.99, me,
                               issued_at=datetime.now(UTC) - timedelta(seconds=61))
    cases = {
        "face_mismatch": st.sandbox.compare(ec, face2, 0.99, me),  # another person's face
        "low_liveness": st.sandbox.compare(ec, face, 0.5, me),
        "bad_signature": forged,
        "stale": stale,
        "unknown_terminal": st.sandbox.compare(ec, face, 0.99, "ghost-terminal"),
        "revoked_terminal": st.sandbox.compare(ec, face, 0.99, REVOKED),
    }
    async with st.client() as counter:
        obn, ok = await verify_face(st, counter, ec, face, visit="VIS-R0", terminal=me,
                                    result=replayed)
        assert ok.status_code == 200
        cases["replayed"] = replayed
        for reason, result in cases.items():
            obn, r = await verify_face(st, counter, ec, face, visit="VIS-R1", terminal=me,
                                       result=result)
            assert r.status_code == 403, (reason, r.text)
            assert r.json()["reason"] == reason
            sid = r.json()["identity_id"]
            found = await st.events.wait_for(
                lambda rec, sid=sid: rec in _of(st, "identity.rejected.v1", sid))
            assert payload(found[0])["reason"] == reason
        # A credential of an issuer nobody registered.
        from yigongti_deploy.face_sandbox import FaceSandbox
        rogue = FaceSandbox(issuer="rogue-platform")
        rogue.enrol(ec, face)
        _, r = await verify_face(st, counter, ec, face, visit="VIS-R1", terminal=me,
                                 result=rogue.compare(ec, face, 0.99, me))
        assert r.json()["reason"] == "unknown_issuer"
        # The signing rule is the published one.
        assert credentials.verify(st.sandbox.compare(ec, face, 0.99, me),
                                  st.sandbox.key.public_key())


async def test_voucher_card_and_id_number_take_the_same_path(settlement):
    st = settlement
    nid, ec, ref, _ = await enrol(st, card_sn="CARD0001X")
    st.secrets_used.append("CARD0001X")
    async with st.client() as counter:
        voucher = st.sandbox.voucher(ec)
        st.secrets_used.append(voucher["payload"]["voucher_no"])
        for kind, credential in (("qr_voucher", voucher), ("id_number", {"id_number": nid}),
                                 ("card", {"id_number": nid, "card_sn": "CARD0001X"})):
            r = await counter.post("/identity/verify", json={
                "out_biz_no": out_biz_no(), "visit_id": "VIS-Q1", "credential_type": kind,
                "credential": credential})
            assert r.status_code == 200, (kind, r.text)
            assert r.json()["patient_ref"] == ref
            st.secrets_used.append(r.json()["settlement_token"])
        wrong_card = await counter.post("/identity/verify", json={
            "out_biz_no": out_biz_no(), "visit_id": "VIS-Q1", "credential_type": "card",
            "credential": {"id_number": nid, "card_sn": "CARD0002X"}})
        assert wrong_card.status_code == 403 and wrong_card.json()["reason"] == "face_mismatch"
        # The ID look-up gives a terminal the ref; lower-case x and 15 digits alike.
        looked = await counter.post("/patients/lookup", json={"id_number": nid.lower(),
                                                              "visit_id": "VIS-Q1"})
        assert looked.json() == {"patient_ref": ref}
        unknown = await counter.post("/patients/lookup", json={"id_number": "110105194912310021",
                                                               "visit_id": "VIS-Q1"})
        invalid = await counter.post("/patients/lookup", json={"id_number": "110105194912310020",
                                                               "visit_id": "VIS-Q1"})
        assert unknown.status_code == invalid.status_code == 404
        assert unknown.json() == invalid.json()


async def _settle(st, counter, ec, face, visit: str, lines: list, *, terminal=None,
                  setting="outpatient", stay=None) -> dict:
    obn, r = await verify_face(st, counter, ec, face, visit=visit,
                               terminal=terminal or st.dev_keys.terminal_id)
    assert r.status_code == 200, r.text
    body = {"out_biz_no": obn, "visit_id": visit, "setting": setting, "lines": lines,
            "settlement_token": r.json()["settlement_token"]}
    if stay:
        body["stay"] = stay
    s = await counter.post("/settlements", json=body)
    assert s.status_code == 200, s.text
    return s.json()


async def _accumulators(st, ref: str) -> dict:
    async with st.pool.acquire() as conn:
        raw = await conn.fetchval(
            """SELECT figures FROM accumulators a JOIN person_refs r USING (person_id)
               WHERE r.patient_ref = $1""", ref)
    return raw or {}


async def test_concurrent_settlements_of_one_person_then_reversal_restores(settlement):
    st = settlement
    _, ec, ref, face = await enrol(st, assistance="low_income")
    async with st.client() as counter:
        first = await _settle(st, counter, ec, face, "VIS-C0", [line(price="500.00")])
        before = await _accumulators(st, ref)
        results = await asyncio.gather(*(
            _settle(st, counter, ec, face, f"VIS-C{i}", [line(price="700.00")])
            for i in range(1, 5)))
        after = await _accumulators(st, ref)
        # Each settlement moved the accumulators exactly once, in some order.
        paid = sum(Decimal(r["basic"]) for r in results) + Decimal(first["basic"])
        assert Decimal(after["basic_paid"]) == paid
        assert Decimal(after["out_of_pocket"]) == sum(
            Decimal(r["out_of_pocket"]) for r in [first, *results])
        # Reversal goes latest first (冲正); an earlier one is refused.
        order = sorted(results, key=lambda r: r["settled_at"])
        async with st.pool.acquire() as conn:
            latest = await conn.fetchval(
                """SELECT out_biz_no FROM settlements WHERE patient_ref = $1
                   ORDER BY seq DESC LIMIT 1""", ref)
        refused = await counter.post(f"/settlements/{first['settlement_id'].split(':')[1]}"
                                     "/reversal", json={"reason": "wrong_bill"})
        assert refused.status_code == 422 and refused.json()["detail"] == "not_latest"
        assert order
        async with st.pool.acquire() as conn:
            latest_ids = [r["out_biz_no"] for r in await conn.fetch(
                """SELECT out_biz_no FROM settlements WHERE patient_ref = $1
                     AND status = 'completed' ORDER BY seq DESC""", ref)]
        assert latest_ids[0] == latest
        for obn in latest_ids[:-1]:
            r = await counter.post(f"/settlements/{obn}/reversal",
                                   json={"reason": "counter_timeout"})
            assert r.status_code == 200, r.text
        assert await _accumulators(st, ref) == before
        again = await counter.post(f"/settlements/{latest_ids[0]}/reversal",
                                   json={"reason": "counter_timeout"})
        assert again.json()["status"] == "reversed"  # a retried reversal: the same answer
    assert await _accumulators(st, ref) == before
    await st.events.wait_for(lambda r: r in st.events.of_type("settlement.reversed.v1"),
                             count=4)


async def test_a_second_institution_and_template_helpers(settlement):
    """The stream rule: the same person settling at two institutions within minutes."""
    st = settlement
    _, ec, ref, face = await enrol(st)
    async with st.client() as counter, st.client(user=COUNTER_H01, institution=HOSPITAL) as h01:
        await _settle(st, counter, ec, face, "VIS-T1", [line()])
        second = await _settle(st, h01, ec, face, "VIS-T2", [line()], terminal=COUNTER_H01)
    found = await st.events.wait_for(
        lambda r: r in _of(st, "audit_flag.raised.v1", second["settlement_id"]))
    assert payload(found[0])["rule_id"] == "two_institutions_window"
    assert template(1) == template(1)

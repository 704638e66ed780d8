"""Charges from the lab (and diagnosis) reach the visit once; a reversal takes
them back; the audit rules, the alert, the intake door; and at the end, no
ID number, authNo, token or bearer token on any topic or in the logs."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from labflow import payload, rejection_for
from settlementflow import enrol, line, out_biz_no, verify_face
from yigongti_contracts.envelope import Envelope, to_headers
from yigongti_contracts.lab import v1 as lab_v1
from yigongti_contracts.lab.codes import PolicyCategory, ReversalReason
from yigongti_contracts.settlement import v1
from yigongti_contracts.settlement.codes import settlement_id_of

LAB = "652325-L01"


async def _publish_lab(st, event, ce_id: str | None = None) -> str:
    ce_id = ce_id or str(uuid.uuid4())
    envelope = Envelope(id=ce_id, source="/yigongti/lab", type=event.CE_TYPE,
                        time=datetime.now(UTC), subject=event.kafka_key(), aggseq=1)
    await st.producer.send_and_wait(st.topics["lab.events.v1"], key=event.kafka_key().encode(),
                                    headers=to_headers(envelope),
                                    value=event.model_dump_json().encode())
    return ce_id


def _posted(ref: str, visit: str, charge: str, price: str = "45.00") -> lab_v1.ChargesPosted:
    return lab_v1.ChargesPosted(
        order_id=f"ORD-{visit}", charge_id=charge, visit_id=visit, patient_ref=ref,
        billing_institution="652325-B01", test_code="K", item_code="250301001",
        policy_category=PolicyCategory.a, quantity=1, unit_price=Decimal(price),
        amount=Decimal(price), price_table_id="PT-2025", posted_at=datetime.now(UTC))


async def _charges(st, visit: str) -> list:
    async with st.pool.acquire() as conn:
        return await conn.fetch("SELECT * FROM visit_charges WHERE visit_id = $1 "
                                "ORDER BY charge_id", visit)


async def _wait_charges(st, visit: str, predicate, timeout: float = 20) -> list:
    import asyncio
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = await _charges(st, visit)
        if predicate(rows):
            return rows
        assert asyncio.get_running_loop().time() < deadline, rows
        await asyncio.sleep(0.05)


async def test_lab_charges_reach_the_visit_once_and_reversals_take_them_back(settlement):
    st = settlement
    _, ec, ref, face = await enrol(st)
    visit = "VIS-L1"
    first = _posted(ref, visit, "CHG-L1-1")
    ce_id = await _publish_lab(st, first)
    await _publish_lab(st, first, ce_id=ce_id)  # the same record again (no idempotent producer)
    await _publish_lab(st, _posted(ref, visit, "CHG-L1-2", "30.00"))
    # A reversal arriving before its charge waits for it.
    await _publish_lab(st, lab_v1.ChargesReversed(
        order_id=f"ORD-{visit}", charge_id="CHG-L1-3", visit_id=visit, patient_ref=ref,
        billing_institution="652325-B01", item_code="250301001", amount=Decimal("12.00"),
        reason=ReversalReason.test_cancelled, reversed_at=datetime.now(UTC)))
    await _publish_lab(st, _posted(ref, visit, "CHG-L1-3", "12.00"))
    await _publish_lab(st, lab_v1.ChargesReversed(
        order_id=f"ORD-{visit}", charge_id="CHG-L1-2", visit_id=visit, patient_ref=ref,
        billing_institution="652325-B01", item_code="250301001", amount=Decimal("30.00"),
        reason=ReversalReason.test_cancelled, reversed_at=datetime.now(UTC)))
    rows = await _wait_charges(st, visit, lambda rows: len(rows) == 3 and all(
        (r["reversed_at"] is not None) == (r["charge_id"] != "CHG-L1-1") for r in rows))
    assert [r["charge_id"] for r in rows] == ["CHG-L1-1", "CHG-L1-2", "CHG-L1-3"]
    async with st.client() as counter:
        obn, r = await verify_face(st, counter, ec, face, visit=visit,
                                   terminal=st.dev_keys.terminal_id)
        done = await counter.post("/settlements", json={
            "out_biz_no": obn, "visit_id": visit, "setting": "outpatient",
            "posted_charges": True, "settlement_token": r.json()["settlement_token"]})
        assert done.status_code == 200, done.text
        assert done.json()["total"] == "45.00"
        assert done.json()["charges"] == [{"source": "lab", "charge_id": "CHG-L1-1"}]
        # A charge posted after the visit was settled goes to a supplementary settlement.
        await _publish_lab(st, _posted(ref, visit, "CHG-L1-4", "20.00"))
        await _wait_charges(st, visit, lambda rows: len(rows) == 4)
        obn2, r2 = await verify_face(st, counter, ec, face, visit=visit,
                                     terminal=st.dev_keys.terminal_id)
        more = await counter.post("/settlements", json={
            "out_biz_no": obn2, "visit_id": visit, "setting": "outpatient",
            "posted_charges": True, "settlement_token": r2.json()["settlement_token"]})
        assert more.json()["total"] == "20.00"
        assert more.json()["supplementary_of"] == done.json()["settlement_id"]
    # A settled charge reversed: recorded, with an audit note (the refund is the office's).
    await _publish_lab(st, lab_v1.ChargesReversed(
        order_id=f"ORD-{visit}", charge_id="CHG-L1-1", visit_id=visit, patient_ref=ref,
        billing_institution="652325-B01", item_code="250301001", amount=Decimal("45.00"),
        reason=ReversalReason.test_cancelled, reversed_at=datetime.now(UTC)))
    notes = await st.events.wait_for(
        lambda rec: rec in st.events.of_type("audit_flag.raised.v1")
        and payload(rec)["patient_ref"] == ref
        and payload(rec)["rule_id"].startswith("charge_"), count=2)
    assert {payload(n)["rule_id"] for n in notes} == {"charge_posted_after_settlement",
                                                      "charge_reversed_after_settlement"}
    assert {e["value"] for n in notes for e in payload(n)["evidence"]
            if e["code"] == "charge_id"} == {"CHG-L1-4", "CHG-L1-1"}


async def test_diagnosis_charges_reach_the_visit_too(settlement):
    from yigongti_contracts.diagnosis import v1 as diagnosis_v1

    st = settlement
    _, _, ref, _ = await enrol(st)
    fee = diagnosis_v1.ChargesPosted(
        request_id="DXR-1", charge_id="CHG-D1", visit_id="VIS-DX1", patient_ref=ref,
        billing_institution="652325-B01", item_code="220800001", policy_category="a",
        quantity=1, unit_price=Decimal("25.00"), amount=Decimal("25.00"),
        price_table_id="PT-2025", posted_at=datetime.now(UTC))
    envelope = Envelope(id=str(uuid.uuid4()), source="/yigongti/diagnosis", type=fee.CE_TYPE,
                        time=datetime.now(UTC), subject=fee.kafka_key(), aggseq=1)
    await st.producer.send_and_wait(st.topics["diagnosis.events.v1"],
                                    key=fee.kafka_key().encode(), headers=to_headers(envelope),
                                    value=fee.model_dump_json().encode())
    rows = await _wait_charges(st, "VIS-DX1", lambda rows: len(rows) == 1)
    assert rows[0]["source"] == "diagnosis" and rows[0]["amount"] == Decimal("25.00")


async def test_audit_rules_flag_with_evidence_and_the_office_decides(settlement):
    st = settlement
    today = datetime.now(UTC) - timedelta(hours=1)
    _, ec, ref, face = await enrol(st, male=True)
    async with st.client() as counter:
        pre = await counter.post("/precheck", json={"patient_ref": ref, "lines": [
            line("250101012", "30.00", served_at=today)]})
        assert [h["rule_id"] for h in pre.json()["hits"]] == ["sex_specific_item"]
        lines = [line("250302003", "60.00", served_at=today),  # HbA1c
                 line("250301001", "10.00", served_at=today),
                 line("250301001", "10.00", served_at=today),  # the same item twice today
                 line("250101012", "30.00", served_at=today)]  # a female-only item, a man
        obn, r = await verify_face(st, counter, ec, face, visit="VIS-AU1",
                                   terminal=st.dev_keys.terminal_id)
        s = await counter.post("/settlements", json={
            "out_biz_no": obn, "visit_id": "VIS-AU1", "setting": "outpatient", "lines": lines,
            "settlement_token": r.json()["settlement_token"]})
        assert s.status_code == 200, s.text
        # HbA1c again within 90 days; readmission within 15 days (inpatient stays).
        stay1 = {"admitted_at": (today - timedelta(days=20)).isoformat(),
                 "discharged_at": (today - timedelta(days=12)).isoformat()}
        stay2 = {"admitted_at": (today - timedelta(days=3)).isoformat(),
                 "discharged_at": today.isoformat()}
        for visit, stay, items in (("VIS-AU2", stay1, [line("310100001", "900.00")]),
                                   ("VIS-AU3", stay2, [line("250302003", "60.00")])):
            obn, r = await verify_face(st, counter, ec, face, visit=visit,
                                       terminal=st.dev_keys.terminal_id)
            s = await counter.post("/settlements", json={
                "out_biz_no": obn, "visit_id": visit, "setting": "inpatient", "lines": items,
                "stay": stay, "settlement_token": r.json()["settlement_token"]})
            assert s.status_code == 200, s.text
    async with st.office() as office:
        flags = (await office.get("/office/flags")).json()["items"]
        mine = {f["rule_id"]: f for f in flags if f["patient_ref"] == ref}
        assert set(mine) >= {"duplicate_item_same_day", "sex_specific_item", "hba1c_frequency",
                             "readmission_15_days"}
        assert mine["readmission_15_days"]["evidence"]["days_between"] == "9" or \
            int(mine["readmission_15_days"]["evidence"]["days_between"]) <= 15
        flag = mine["sex_specific_item"]
        d = await office.post(f"/office/flags/{flag['flag_id']}/decision",
                              json={"decision": "upheld", "reason": "billing_error"})
        assert d.status_code == 200
        again = await office.post(f"/office/flags/{flag['flag_id']}/decision",
                                  json={"decision": "dismissed", "reason": "other"})
        assert again.status_code == 409
    found = await st.events.wait_for(
        lambda rec: rec in st.events.of_type("audit_decision.recorded.v1")
        and payload(rec)["flag_id"] == flag["flag_id"])
    assert payload(found[0])["decided_by"] == "auditor-1"


async def test_a_deceased_persons_credential_is_refused_and_flagged(settlement):
    st = settlement
    _, ec, ref, face = await enrol(st, died_on="2024-05-01")
    async with st.client() as counter:
        _, r = await verify_face(st, counter, ec, face, visit="VIS-D1",
                                 terminal=st.dev_keys.terminal_id)
    assert r.status_code == 403 and r.json()["reason"] == "deceased"
    sid = r.json()["identity_id"]
    flags = await st.events.wait_for(
        lambda rec: rec in st.events.of_type("audit_flag.raised.v1")
        and payload(rec)["settlement_id"] == sid)
    assert payload(flags[0])["rule_id"] == "deceased_credential"


async def test_high_out_of_pocket_alert_and_safety_net(settlement):
    st = settlement
    _, ec, ref, face = await enrol(st, formerly_poor=True)
    async with st.client() as counter:
        obn, r = await verify_face(st, counter, ec, face, visit="VIS-HP1",
                                   terminal=st.dev_keys.terminal_id)
        s = await counter.post("/settlements", json={
            "out_biz_no": obn, "visit_id": "VIS-HP1", "setting": "outpatient",
            "lines": [line("X-9", "9000.00", qty=2, category="c")],
            "settlement_token": r.json()["settlement_token"]})
        assert s.status_code == 200, s.text
        sid = s.json()["settlement_id"]
    alert = await st.events.wait_for(
        lambda rec: rec in st.events.of_type("high_out_of_pocket.alert.v1")
        and payload(rec)["settlement_id"] == sid)
    assert payload(alert[0])["formerly_poor"] is True
    async with st.office() as office:
        assert sid in [a["settlement_id"] for a in (await office.get("/office/alerts")).json()
                       ["items"]]
        g = await office.post(f"/office/settlements/{sid}/safety-net", json={"amount": "1000.00"})
        assert g.status_code == 200, g.text
        assert g.json()["out_of_pocket_after"] == "17000.00"
        too_much = await office.post(f"/office/settlements/{sid}/safety-net",
                                     json={"amount": "17000.01"})
        assert too_much.status_code == 422


async def test_the_intake_door_settles_a_discharge_with_the_same_handler(settlement):
    st = settlement
    _, ec, ref, face = await enrol(st, assistance="low_income")
    institution = st.dev_keys.institution_id
    async with st.client() as counter:
        admission, r = await verify_face(st, counter, ec, face, visit="VIS-IN1",
                                         terminal=st.dev_keys.terminal_id)
        assert r.status_code == 200
    now = datetime.now(UTC)
    request = v1.SettlementRequested(
        out_biz_no=out_biz_no("DIS"), institution=institution, visit_id="VIS-IN1",
        identity_id=settlement_id_of(institution, admission), setting="inpatient",
        mode="discharge", lines=(v1.BillLine(
            item_code="310100001", category="a", quantity=3, unit_price=Decimal("2000.00"),
            amount=Decimal("6000.00"), served_at=now - timedelta(days=1)),),
        stay=v1.Stay(admitted_at=now - timedelta(days=5), discharged_at=now),
        operator_id="STAFF-1", requested_at=now)
    await st.terminal.publish(request)
    sid = settlement_id_of(institution, request.out_biz_no)
    done = await st.events.wait_for(
        lambda rec: rec in st.events.of_type("settlement.completed.v1")
        and payload(rec)["settlement_id"] == sid)
    assert payload(done[0])["mode"] == "discharge"
    # The same outBizNo again (a retried record): answered, never settled twice.
    await st.terminal.publish(request)
    # The back office reverses it through the same door.
    await st.terminal.publish(v1.SettlementReversalRequested(
        settlement_id=sid, institution=institution, reason="back_office",
        operator_id="STAFF-2", requested_at=datetime.now(UTC)))
    await st.events.wait_for(lambda rec: rec in st.events.of_type("settlement.reversed.v1")
                             and payload(rec)["settlement_id"] == sid)
    # The published examples, as the terminal contract says: refused, with their reasons.
    from yigongti_contracts.settlement.examples import INTAKE_EXAMPLES
    for model, reason in ((v1.SettlementRequested, "identity_unknown"),
                          (v1.SettlementReversalRequested, "unknown_settlement")):
        ce_id = await st.terminal.publish(INTAKE_EXAMPLES[model])
        rejected = await st.logs["settlement.events.v1"].wait_for(rejection_for(ce_id))
        assert payload(rejected[0])["reason"] == reason
    async with st.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM settlements WHERE settlement_id = $1",
                                   sid) == 1
    assert len([r for r in st.events.of_type("settlement.completed.v1")
                if payload(r)["settlement_id"] == sid]) == 1


async def test_zz_no_id_number_token_or_auth_no_anywhere(settlement, caplog):
    """Every record on every topic and the captured logs, for every secret the
    tests used (ID numbers 18 and 15 characters and lower-case, authNo,
    voucher numbers, settlement and bearer tokens)."""
    st = settlement
    caplog.set_level(logging.DEBUG)
    needles = set()
    for secret in st.secrets_used:
        needles.add(secret)
        if len(secret) == 18 and secret[:17].isdigit():
            needles.add(secret.lower())
            if secret[6:8] == "19":
                needles.add(secret[:6] + secret[8:17])  # the 15-digit form
    assert len(needles) > 20
    for name, log in st.logs.items():
        for record in log.records:
            blob = (record.value or b"") + b"".join(v or b"" for _, v in record.headers or ())
            text = blob.decode("utf-8", "replace")
            leaked = [n for n in needles if n in text]
            assert not leaked, (name, leaked[:1])
    text = caplog.text
    assert not [n for n in needles if n in text]
    async with st.pool.acquire() as conn:
        for table in ("persons", "identities", "settlements", "lookups", "tokens",
                      "used_credentials", "audit_flags"):
            rows = await conn.fetch(f"SELECT * FROM {table}")  # noqa: S608 - fixed names
            dump = repr([dict(r) for r in rows])
            assert not [n for n in needles if n in dump], table

"""The stack starts the settlement service and the face platform's sandbox,
each a process of its own, and the whole face path runs on one machine:
enrol a template at the sandbox, compare a probe there, hand the signed result
to settlement, settle."""

from __future__ import annotations

import httpx
import pytest
from settlementflow import line, national_id, out_biz_no, template
from yigongti_deploy import stack as stack_module
from yigongti_kit.auth import issue_token


@pytest.mark.timeout(120)
async def test_the_stack_runs_settlement_with_the_face_sandbox(
        monkeypatch, tmp_path, kafka_bootstrap, broker_kind, admin_database_url, topic_prefix):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("KAFKA_BROKER_KIND", broker_kind)
    monkeypatch.setenv("DATABASE_URL", admin_database_url)
    monkeypatch.setenv("PACS_DICOMWEB_URL", "http://127.0.0.1:9/dicom-web")  # none needed
    monkeypatch.setenv("TOPIC_PREFIX", topic_prefix)
    stack = stack_module.Stack(tmp_path / "run", services=["settlement"])
    await stack.start()
    try:
        assert stack.face_sandbox_url in stack.describe()
        keys = stack.keys

        def bearer(user, roles):
            return {"Authorization": "Bearer " + issue_token(
                keys.auth_private_pem, user=user, institution=keys.institution_id,
                roles=roles, audience="settlement")}

        base = stack.services["settlement"].url
        nid, face = national_id(), template(7)
        async with httpx.AsyncClient(timeout=10) as http:
            enrolled = await http.post(f"{base}/office/persons", headers=bearer(
                "office-1", ["insurance_office"]), json={
                "id_number": nid, "scheme": "resident", "assistance": "low_income",
                "region": "652325", "ec_index_no": "EC-STACK-1"})
            assert enrolled.status_code == 200, enrolled.text
            await http.post(f"{stack.face_sandbox_url}/enrol",
                            json={"ec_index_no": "EC-STACK-1", "template": face})
            result = (await http.post(f"{stack.face_sandbox_url}/compare", json={
                "ec_index_no": "EC-STACK-1", "probe": [x * 1.01 for x in face],
                "liveness": 0.97, "terminal_id": keys.terminal_id})).json()
            counter = bearer(keys.terminal_id, ["settlement_terminal"])
            obn = out_biz_no()
            verified = await http.post(f"{base}/identity/verify", headers=counter, json={
                "out_biz_no": obn, "visit_id": "VIS-S1", "credential_type": "face",
                "credential": result})
            assert verified.status_code == 200, verified.text
            assert verified.json()["patient_ref"] == enrolled.json()["patient_ref"]
            settled = await http.post(f"{base}/settlements", headers=counter, json={
                "out_biz_no": obn, "visit_id": "VIS-S1", "setting": "outpatient",
                "lines": [line(price="120.00")],
                "settlement_token": verified.json()["settlement_token"]})
            assert settled.status_code == 200, settled.text
        log = (stack.services["settlement"].log_path).read_text()
        assert nid not in log and result["payload"]["auth_no"] not in log
    finally:
        await stack.stop()

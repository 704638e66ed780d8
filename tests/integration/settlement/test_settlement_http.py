"""HTTP: bearer scopes (no token 401, wrong role 403), bad input a clear 4xx
without values, and the clinic feed of the institution's settlements."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from settlementflow import enrol, line, national_id, verify_face


async def test_roles_and_tokens_are_checked(settlement):
    st = settlement
    anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=st.runtime.app),
                                  base_url="http://settlement")
    async with anonymous, st.client() as counter, \
            st.client(roles=("clinician",), user="doc-1") as clinician:
        nid = national_id()
        st.secrets_used.append(nid)
        r = await anonymous.post("/patients/lookup", json={"id_number": nid, "visit_id": "V1"})
        assert r.status_code == 401
        for call in (clinician.post("/patients/lookup", json={"id_number": nid,
                                                               "visit_id": "V1"}),
                     counter.get("/office/flags"),
                     counter.post("/office/persons", json={"id_number": nid,
                                                           "scheme": "resident",
                                                           "region": "652325"})):
            assert (await call).status_code == 403
        bad = await counter.post("/settlements", json={"out_biz_no": "X", "visit_id": "V1",
                                                       "settlement_token": "short",
                                                       "setting": "outpatient",
                                                       "lines": [], "id_number": nid})
        assert bad.status_code == 422 and nid not in bad.text


async def test_the_clinic_feed_shows_the_institutions_settlements_not_the_audit(settlement):
    st = settlement
    _, ec, ref, face = await enrol(st)
    async with st.client() as counter, \
            st.client(roles=("clinic_terminal",), user="clinic-1") as clinic:
        obn, r = await verify_face(st, counter, ec, face, visit="VIS-F1",
                                   terminal=st.dev_keys.terminal_id)
        s = await counter.post("/settlements", json={
            "out_biz_no": obn, "visit_id": "VIS-F1", "setting": "outpatient",
            "lines": [line(), line()], "settlement_token": r.json()["settlement_token"]})
        sid = s.json()["settlement_id"]
        for _ in range(200):
            items = (await clinic.get("/feed", params={"limit": 500})).json()["items"]
            mine = [i for i in items if i["settlement_id"] == sid]
            if any(i["type"].endswith("settlement.completed.v1") for i in mine):
                break
            await asyncio.sleep(0.05)
        types = {i["type"] for i in mine}
        assert "yigongti.settlement.settlement.completed.v1" in types
        assert not {t for t in types if "audit" in t or "alert" in t}


async def test_treat_first_pay_later_is_for_assistance_recipients(settlement):
    st = settlement
    _, ec, ref, face = await enrol(st, assistance="none")
    async with st.client() as counter:
        obn, r = await verify_face(st, counter, ec, face, visit="VIS-TF1",
                                   terminal=st.dev_keys.terminal_id)
        s = await counter.post("/settlements", json={
            "out_biz_no": obn, "visit_id": "VIS-TF1", "setting": "outpatient",
            "mode": "discharge", "lines": [line()],
            "settlement_token": r.json()["settlement_token"]})
        assert s.status_code == 422 and s.json()["detail"] == "not_eligible_for_treat_first"


def _rotated(keys_file: Path, directory: Path) -> Path:
    """The keys file with a new current version v2 beside v1."""
    import secrets

    import yaml
    raw = yaml.safe_load(keys_file.read_text())
    rotated = directory / "patient-ref-keys.yaml"
    rotated.write_text(yaml.safe_dump({"current": "v2", "keys": {
        **raw["keys"], "v2": secrets.token_hex(32)}}))
    return rotated


async def test_key_rotation_makes_new_refs_and_old_refs_still_resolve(settlement, tmp_path):
    from yigongti_settlement import config

    st = settlement
    nid, ec, old_ref, face = await enrol(st)
    settings, _ = config.current()
    rotated = _rotated(Path(settings.patient_ref_keys_file), tmp_path)
    config.configure(settings.model_copy(update={"patient_ref_keys_file": str(rotated)}))
    try:
        async with st.client() as counter, st.office() as office:
            looked = await counter.post("/patients/lookup", json={"id_number": nid,
                                                                  "visit_id": "VIS-K1"})
            new_ref = looked.json()["patient_ref"]
            assert new_ref.startswith("v2:") and old_ref.startswith("v1:")
            _, r = await verify_face(st, counter, ec, face, visit="VIS-K1",
                                     terminal=st.dev_keys.terminal_id)
            assert r.json()["patient_ref"] == new_ref  # events now carry the new ref
            for ref in (old_ref, new_ref):  # both name the same person
                got = await office.get("/office/settlements", params={"patient_ref": ref})
                assert got.status_code == 200
            async with st.pool.acquire() as conn:
                ids = {await conn.fetchval("SELECT person_id FROM person_refs "
                                           "WHERE patient_ref = $1", ref)
                       for ref in (old_ref, new_ref)}
            assert len(ids) == 1 and None not in ids
    finally:
        config.configure(settings)


async def test_look_ups_are_logged_and_rate_limited_per_terminal(settlement):
    st = settlement
    nid, _, ref, _ = await enrol(st)
    async with st.client(user="counter-rl") as busy, st.client(user="counter-ok") as other:
        answers = [await busy.post("/patients/lookup", json={"id_number": nid,
                                                             "visit_id": f"VIS-RL{i}"})
                   for i in range(51)]  # LOOKUP_LIMIT_PER_MINUTE is 50 here
        assert [a.status_code for a in answers[:50]] == [200] * 50
        assert answers[50].status_code == 429 and answers[50].headers["retry-after"] == "60"
        assert (await other.post("/patients/lookup", json={
            "id_number": nid, "visit_id": "VIS-RL-OK"})).json() == {"patient_ref": ref}
    async with st.pool.acquire() as conn:
        logged = await conn.fetch("SELECT * FROM lookups WHERE terminal_id = 'counter-rl'")
    assert len(logged) == 50 and {r["visit_id"] for r in logged} == {
        f"VIS-RL{i}" for i in range(50)}
    assert all(set(r.keys()) == {"id", "terminal_id", "institution", "visit_id", "found", "at"}
               for r in logged)

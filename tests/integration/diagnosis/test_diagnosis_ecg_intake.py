"""ECG intake: a terminal uploads pydicom's real 12-lead waveform_ecg.dcm over
HTTP (claim check), the worker measures it, DiagnosisRequested carrying the
reference puts it on the ECG centre's worklist; references are bound to their
institution and used once; bad recordings are refused with reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from diagflow import CLINIC, ECG_CENTRE, OTHER_CLINIC, ecg_request
from labflow import rejection_for
from yigongti_contracts.diagnosis.codes import Priority


async def test_waveform_ecg_measured_within_the_carts_figures_and_queued(dx):
    uploaded = await dx.upload()
    m = uploaded["measurements"]
    assert uploaded["recording_ref"].startswith("REC-")
    # The cart's own figures in the file: HR 61, QRS 75 ms, QTc 370 ms.
    assert abs(m["heart_rate_bpm"] - 61) <= 2
    assert abs(m["qrs_ms"] - 75) <= 20
    assert abs(m["qtc_ms"] - 370) <= 30
    assert m["qtc_formula"] == "Fridericia"

    req = ecg_request(uploaded["recording_ref"], indications=("R07.4",),
                      symptom_onset=datetime.now(UTC) - timedelta(hours=2))
    await dx.terminal.publish(req)
    (queued,) = await dx.wait("diagnosis.queued.v1", req.request_id)
    assert queued["priority"] == Priority.stat.value
    assert queued["priority_reasons"] == ["chest_pain_under_12h"]
    assert queued["reading_centre"] == ECG_CENTRE
    async with dx.reader() as reader:
        items = (await reader.get("/worklist")).json()["items"]
    assert req.request_id in [i["request_id"] for i in items]
    # The service process never imported neurokit2: the worker did.
    import sys
    assert "neurokit2" not in sys.modules


async def test_a_reference_is_bound_to_its_institution_and_used_once(dx):
    other = await dx.upload(institution=OTHER_CLINIC)
    foreign = ecg_request(other["recording_ref"])
    ce_id = await dx.terminal.publish(foreign)
    (refused,) = [r for r in await dx.events.wait_for(rejection_for(ce_id))]
    from labflow import payload
    assert payload(refused)["reason"] == "unknown_recording"

    own = await dx.upload()
    first = ecg_request(own["recording_ref"])
    await dx.terminal.publish(first)
    await dx.wait("diagnosis.queued.v1", first.request_id)
    again = ecg_request(own["recording_ref"])
    ce_id = await dx.terminal.publish(again)
    (refused,) = await dx.events.wait_for(rejection_for(ce_id))
    assert payload(refused)["reason"] == "unknown_recording"
    assert CLINIC != OTHER_CLINIC


async def test_bad_recordings_are_refused_with_reasons(dx):
    header = "# sample_rate_hz: 500\n# units: uV\n"
    leads = "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6\n"
    row = ",".join(["10"] * 12) + "\n"
    cases = {
        "missing_lead": header + "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5\n"
                        + ",".join(["1"] * 11) + "\n",
        "duration_out_of_range": header + leads + row * 500,  # 1 s
        "sample_rate_out_of_range": "# sample_rate_hz: 100\n# units: uV\n" + leads + row * 1000,
        "unsupported_units": "# sample_rate_hz: 500\n# units: V\n" + leads + row * 5000,
        "unknown_field": header + "# patient_name: X\n" + leads + row * 5000,
    }
    async with dx.terminal_http() as http:
        for reason, text in cases.items():
            answer = await http.post("/recordings", content=text.encode(),
                                     headers={"Content-Type": "text/csv"})
            assert answer.status_code == 422, (reason, answer.text)
            assert answer.json()["detail"][0]["type"] == reason
        answer = await http.post("/recordings", content=b"not dicom",
                                 headers={"Content-Type": "application/dicom"})
        assert answer.json()["detail"][0]["type"] == "unreadable"
        answer = await http.post("/recordings", content=b"x",
                                 headers={"Content-Type": "image/png"})
        assert answer.json()["detail"][0]["type"] == "unsupported_format"
    async with dx.client(CLINIC, ["clinician"]) as clinician:
        answer = await clinician.post("/recordings", content=b"x",
                                      headers={"Content-Type": "text/csv"})
        assert answer.status_code == 403


async def test_no_patient_string_of_the_sample_reaches_database_events_or_logs(dx, caplog):
    import pydicom
    from diagflow import waveform_ecg
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    secrets = [str(v) for v in (ds.get("PatientName"), ds.get("PatientID"),
                                ds.get("PatientBirthDate")) if v]
    assert secrets
    uploaded = await dx.upload(waveform_ecg())
    req = ecg_request(uploaded["recording_ref"])
    await dx.terminal.publish(req)
    await dx.wait("diagnosis.queued.v1", req.request_id)
    async with dx.pool.acquire() as conn:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        dump = []
        for t in tables:
            rows = await conn.fetch(f'SELECT t::text AS row FROM "{t["tablename"]}" t')
            dump += [r["row"] for r in rows]
        blobs = await conn.fetch("SELECT data FROM recordings")
    text = "\n".join(dump) + "".join(str(r.value) for r in dx.events.records) + caplog.text
    raw = b"".join(bytes(b["data"]) for b in blobs)
    for secret in secrets:
        assert secret not in text
        assert secret.encode() not in raw


async def test_the_real_waveform_goes_through_to_a_signed_report_and_valid_fhir(dx):
    from fhir_check import problems

    uploaded = await dx.upload()
    req = ecg_request(uploaded["recording_ref"], indications=("R07.4",),
                      symptom_onset=datetime.now(UTC) - timedelta(hours=1))
    await dx.terminal.publish(req)
    await dx.wait("diagnosis.queued.v1", req.request_id)
    async with dx.reader("STAFF-FHIR") as reader:
        assert (await reader.post(f"/requests/{req.request_id}/claim")).status_code == 200
        signed = await reader.post(f"/requests/{req.request_id}/report", json={
            "findings": "ST elevation V1-V4 (scripted reader).", "impression": "Anterior STEMI.",
            "conclusions": ["I21.0"], "critical": True})
        assert signed.status_code == 200, signed.text
        await reader.post(f"/requests/{req.request_id}/amend", json={
            "findings": "ST elevation V1-V5.", "impression": "Anterior STEMI, extended.",
            "conclusions": ["I21.0"], "critical": True, "reason": "finding_added"})
        answer = await reader.get(f"/requests/{req.request_id}/fhir")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/fhir+json")
    bundle = answer.json()
    resources = [e["resource"] for e in bundle["entry"]]
    kinds = [r["resourceType"] for r in resources]
    assert kinds.count("DiagnosticReport") == 2 and "Task" in kinds
    assert "ServiceRequest" in kinds and "Communication" in kinds
    loinc = {c["code"] for r in resources if r["resourceType"] == "Observation"
             for c in r["code"]["coding"]}
    assert {"8867-4", "8633-2", "8636-5"} <= loinc
    critical = [r for r in resources if r.get("interpretation")]
    assert critical[0]["interpretation"][0]["coding"][0]["code"] == "AA"
    reports = [r for r in resources if r["resourceType"] == "DiagnosticReport"]
    assert [r["status"] for r in reports] == ["final", "amended"]
    assert reports[0]["conclusionCode"][0]["coding"][0]["code"] == "I21.0"
    assert problems([bundle, *resources]) == [[]] * (1 + len(resources))


async def test_a_measurement_beyond_a_critical_limit_raises_the_priority(dx):
    from yigongti_diagnosis.recording import to_csv
    from yigongti_diagnosis.synthetic import synthetic_stemi

    slow = to_csv(synthetic_stemi(heart_rate_bpm=30.0, duration_s=12.0)).encode()
    uploaded = await dx.upload(slow, "text/csv")
    assert uploaded["label"] == "SYNTHETIC"
    assert uploaded["measurements"]["heart_rate_bpm"] < 35
    req = ecg_request(uploaded["recording_ref"])  # a routine indication
    await dx.terminal.publish(req)
    (queued,) = await dx.wait("diagnosis.queued.v1", req.request_id)
    assert queued["priority"] == "stat"
    assert "ecg_ventricular_rate_below_35" in queued["priority_reasons"]


async def test_an_oversized_upload_is_refused_before_it_is_read(dx):
    async with dx.terminal_http() as http:
        answer = await http.post("/recordings", content=b"0" * (16 * 1024 * 1024 + 1),
                                 headers={"Content-Type": "text/csv"})
    assert answer.status_code == 413

"""Diagnosis commands on the draft contract (yigongti_contracts.diagnosis.v1),
before the diagnosis service is merged: the ECG file is uploaded over HTTP
(claim check; a stand-in of POST /recordings that parses with the diagnosis
package's own reader) and the request lands on diagnosis.intake.v1 signed by
the terminal, fresh, keyed by request_id; a bad file is refused in words."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import harness
from fastapi import FastAPI, HTTPException, Request
from labflow import EventLog, header
from pydicom.data import get_testdata_file
from typer.testing import CliRunner
from yigongti_contracts.diagnosis.v1 import DiagnosisRequested
from yigongti_diagnosis import recording
from yigongti_diagnosis.synthetic import synthetic_stemi
from yigongti_kit.auth import issue_token
from yigongti_kit.http import bound_port, serve, shutdown
from yigongti_kit.intake_auth import verify_record
from yigongti_terminal.cli import app

runner = CliRunner()
PATIENT = "v1:" + "ef" * 32


def stand_in_recordings(uploaded: dict[str, str]) -> FastAPI:
    api = FastAPI()

    @api.post("/recordings", status_code=201)
    async def upload(request: Request) -> dict:
        try:
            parsed = recording.parse(await request.body(),
                                     request.headers.get("content-type", ""))
        except recording.RecordingRefused as exc:
            raise HTTPException(422, {"reason": exc.code, "field": exc.field}) from None
        ref = f"REC-{uuid.uuid4().hex[:12]}"
        uploaded[ref] = request.headers["content-type"]
        return {"recording_ref": ref, "sample_rate_hz": parsed.sample_rate_hz,
                "duration_s": round(parsed.duration_s, 3)}

    return api


async def yigongti(clinic, *args: str):
    return await asyncio.to_thread(runner.invoke, app, ["--home", str(clinic.config.home),
                                                        *args], env={"COLUMNS": "250"})


REQUEST = ("--patient", PATIENT, "--sex", "male", "--age", "80", "--visit", "V-7",
           "--clinician", "doc-17", "--indication", "I21.9", "--wait", "0")


async def test_ecg_files_and_a_study_reach_diagnosis_intake_signed(
        clinic, topics, dev_keys, kafka_bootstrap, broker_kind, tmp_path):
    names = await topics("diagnosis")
    intake = EventLog()
    await intake.start(harness.client_kwargs(kafka_bootstrap, "consumer", broker_kind),
                       names["diagnosis.intake.v1"])
    uploaded: dict[str, str] = {}
    server, task = await serve(stand_in_recordings(uploaded), "127.0.0.1", 0)
    try:
        token = clinic.config.home / "diagnosis.token"
        token.write_text(issue_token(dev_keys.auth_private_pem, user="nurse-3",
                                     institution=dev_keys.institution_id,
                                     roles=["clinic_terminal"], audience="diagnosis"))
        clinic.config.services["diagnosis"] = f"http://127.0.0.1:{bound_port(server)}"
        clinic.config.tokens["diagnosis"] = token
        clinic.config.save()

        csv = tmp_path / "stemi.csv"
        csv.write_text(recording.to_csv(synthetic_stemi()))
        dicom = get_testdata_file("waveform_ecg.dcm")
        bad = tmp_path / "bad.csv"
        bad.write_text("not,an,ecg\n1,2,3\n")
        results = [await yigongti(clinic, "diagnosis", "ecg", str(csv), *REQUEST,
                                  "--first-contact", datetime.now(UTC).isoformat()),
                   await yigongti(clinic, "diagnosis", "ecg", str(dicom), *REQUEST),
                   await yigongti(clinic, "diagnosis", "study", "--uid", "1.2.840.1.7",
                                  "--accession", "ACC-1", "--modality", "ct", *REQUEST)]
        refused = await yigongti(clinic, "diagnosis", "ecg", str(bad), *REQUEST)
        records = await intake.wait_for(lambda r: True, count=3)
    finally:
        await shutdown(server, task)
        await intake.stop()
    for result in results:
        assert result.exit_code == 0 and "sent" in result.output, result.output
    assert refused.exit_code == 1
    assert "[422 " in " ".join(refused.output.split())

    assert sorted(uploaded.values()) == ["application/dicom", "text/csv"]
    requests = []
    for record in records:
        assert verify_record(record.headers, record.value, dev_keys.signer().public_key_b64,
                             received_at=datetime.now(UTC), max_skew_s=300) is None
        request = DiagnosisRequested.model_validate(json.loads(record.value))
        assert record.key.decode() == request.request_id == header(record, "ce_subject")
        requests.append(request)
    assert [r.recording_ref in uploaded for r in requests] == [True, True, False]
    assert requests[2].study_instance_uid == "1.2.840.1.7"
    assert requests[0].first_medical_contact_at is not None
    assert len(records) == 3 and not clinic.client.queue.waiting()
    # Each send continues the trace its capture began (terminal -> intake -> service).
    for record in records:
        stored = clinic.client.queue._db.execute(
            "SELECT traceparent FROM outbox WHERE ce_id = ?",
            (header(record, "ce_id"),)).fetchone()[0]
        sent = header(record, "traceparent")
        assert stored and sent and sent.split("-")[1] == stored.split("-")[1]
        assert sent.split("-")[2] != stored.split("-")[2]  # the send's own span

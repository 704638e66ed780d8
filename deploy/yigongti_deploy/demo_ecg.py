"""The demo's ECG step (DESIGN §3 steps 2–3) on the embedded stack: a township
terminal uploads a 12-lead ECG over HTTP and requests a reading; the county ECG
centre's reader claims it from the worklist and signs an anterior STEMI as a
critical finding; the clinic's feed gets it within its long-poll, and the
clinic acknowledges from its terminal with read-back.

pydicom's only ECG is a normal tracing, so the tracing here is SYNTHETIC, from
the documented generator (yigongti_diagnosis.synthetic: ST elevation V1–V4) and
labelled so; the STEMI conclusion is the scripted reader's, never the
service's (it makes no automatic diagnosis)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from opentelemetry import propagate
from yigongti_contracts.common import Age, AgeUnit, Sex
from yigongti_contracts.diagnosis.codes import AckChannel, Modality
from yigongti_contracts.diagnosis.v1 import CriticalFindingAck, DiagnosisRequested
from yigongti_kit.auth import issue_token

DEADLINE_S = 60.0
CLINIC = "652325-B01"  # 奇台县总医院乔仁乡分院, the dev terminal's institution
ECG_CENTRE = "652325-E01"
PATIENT = "v1:" + "5e" * 32


def _token(keys, user: str, institution: str, roles: list[str]) -> dict:
    return {"Authorization": "Bearer " + issue_token(
        keys.auth_private_pem, user=user, institution=institution, roles=roles,
        audience="diagnosis")}


async def run_ecg_step(stack, terminal, reader, topic: str) -> int:
    """`terminal`: a TerminalClient on diagnosis.intake.v1; `reader`: an
    AIOKafkaConsumer assigned to diagnosis.events.v1 from the beginning."""
    from yigongti_diagnosis.recording import to_csv
    from yigongti_diagnosis.synthetic import synthetic_stemi

    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{(time.monotonic() - started) * 1000:8.1f} ms] {text}", flush=True)

    keys = stack.keys
    url = stack.services["diagnosis"].url
    request_id = f"DXR-{uuid.uuid4().hex[:10]}"
    seen: list[tuple[str, dict]] = []

    async def wait_for(suffix: str) -> dict:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            for t, body in seen:
                if t.endswith(suffix):
                    return body
                if t.endswith("intake.rejected.v1"):
                    raise RuntimeError(f"intake rejected: {body['reason']}")
            for records in (await reader.getmany(timeout_ms=50)).values():
                for r in records:
                    body = json.loads(r.value)
                    if request_id not in (body.get("request_id"), body.get("key")):
                        continue
                    ce_type = dict(r.headers)["ce_type"].decode()
                    seen.append((ce_type, body))
                    say(f"diagnosis → {ce_type.removeprefix('yigongti.diagnosis.')}")
        raise TimeoutError(f"no {suffix} within {DEADLINE_S:.0f} s")

    print("\n=== ECG: a township's 12-lead ECG read at the county ECG centre ===")
    csv = to_csv(synthetic_stemi()).encode()
    async with httpx.AsyncClient(base_url=url, timeout=60,
                                 event_hooks={"request": [_carry_trace]}) as http:
        upload = await http.post("/recordings", content=csv, headers={
            "Content-Type": "text/csv",
            **_token(keys, "qiaoren-ecg-cart", CLINIC, ["clinic_terminal"])})
        upload.raise_for_status()
        up = upload.json()
        m = up["measurements"] or {}
        say(f"terminal uploaded a SYNTHETIC 12-lead ECG (label {up['label']}): "
            f"{up['recording_ref']}; worker measured HR {m.get('heart_rate_bpm')}/min, "
            f"QRS {m.get('qrs_ms')} ms, QTc {m.get('qtc_ms')} ms ({m.get('qtc_formula')})")
        now = datetime.now(UTC)
        await terminal.publish(DiagnosisRequested(
            request_id=request_id, visit_id="VIS-DEMO-ECG", patient_ref=PATIENT, sex=Sex.male,
            age=Age(value=80, unit=AgeUnit.years), modality=Modality.ECG,
            recording_ref=up["recording_ref"], indications=("R07.4",),
            symptom_onset=now - timedelta(minutes=40),
            first_medical_contact_at=now - timedelta(minutes=8),
            requesting_institution=CLINIC, requesting_clinician="STAFF-0107", requested_at=now))
        say("terminal → DiagnosisRequested (chest pain, onset 40 min ago; claim check: "
            "the event carries the reference, never the waveform)")
        queued = await wait_for("queued.v1")
        say(f"    priority {queued['priority']} {queued['priority_reasons']}, due "
            f"{queued['due_at']} at {queued['reading_centre']}")
        reader_headers = _token(keys, "STAFF-2001", ECG_CENTRE, ["diagnostician", "reads_ecg"])
        claimed = (await http.post("/worklist/claim-next", headers=reader_headers)).json()
        say(f"reader STAFF-2001 claimed {claimed['claimed']['request_id']} "
            f"(lease until {claimed['claimed']['lease_until']})")
        clinic_headers = _token(keys, "qiaoren-doc-01", CLINIC, ["clinician"])
        cursor = (await http.get("/feed", params={"limit": 500},
                                 headers=clinic_headers)).json()["next"]
        signed_at = time.monotonic()
        sign = await http.post(f"/requests/{request_id}/report", headers=reader_headers, json={
            "findings": "Sinus rhythm. ST elevation V1-V4 (SYNTHETIC tracing).",
            "impression": "Acute anterior STEMI (scripted reader).",
            "conclusions": ["I21.0"], "critical": True})
        sign.raise_for_status()
        say("reader signed: I21.0 anterior STEMI, critical")
        feed_item = None
        while feed_item is None and time.monotonic() - signed_at < DEADLINE_S:
            page = (await http.get("/feed", params={"after": cursor, "wait": 5},
                                   headers=clinic_headers)).json()
            cursor = page["next"]
            feed_item = next((i for i in page["items"]
                              if i["type"].endswith("critical_finding.raised.v1")), None)
        if feed_item is None:
            raise TimeoutError("the critical finding never reached the clinic's feed")
        say(f"clinic's feed (long-poll) has the critical finding "
            f"{(time.monotonic() - signed_at) * 1000:.0f} ms after signing")
        await terminal.publish(CriticalFindingAck(
            request_id=request_id, finding_id=feed_item["data"]["finding_id"],
            acknowledged_by="STAFF-0107", channel=AckChannel.terminal, read_back_confirmed=True,
            acknowledged_at=datetime.now(UTC)))
        say("terminal → CriticalFindingAck with read-back")
        await wait_for("critical_finding.acknowledged.v1")
        for suffix in ("charges.posted.v1", "study.recognised.v1"):
            await wait_for(suffix)
    print(f"OK: the ECG step completed in {(time.monotonic() - started) * 1000:.0f} ms")
    return 0


async def _carry_trace(request: httpx.Request) -> None:
    """The reader's and the clinic's HTTP calls continue the journey's trace."""
    propagate.inject(request.headers)

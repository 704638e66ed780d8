"""The demo's ECG (DESIGN §3 steps 2–3): the township uploads a 12-lead ECG
over HTTP and requests a reading, which chest pain makes STAT; the remote ECG
centre's reader claims it from the worklist and signs an anterior STEMI as a
critical finding; the clinic's feed gets it within its long-poll, and the
clinic acknowledges from its terminal with read-back.

pydicom's only ECG is a normal tracing, so the tracing here is SYNTHETIC, from
the documented generator (yigongti_diagnosis.synthetic: ST elevation V1–V4) and
labelled so; the STEMI conclusion is the scripted reader's, never the
service's (it makes no automatic diagnosis)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

from yigongti_contracts.common import Age, AgeUnit, Sex
from yigongti_contracts.diagnosis.codes import AckChannel, Modality
from yigongti_contracts.diagnosis.v1 import CriticalFindingAck, DiagnosisRequested

from .demo_journey import (
    DEADLINE_S,
    ECG_CENTRE,
    ECG_READER,
    NURSE,
    TOWNSHIP,
    TOWNSHIP_DOCTOR,
    Journey,
    StepFailed,
    ok,
)


async def upload_stat(j: Journey) -> None:
    """Step 2: the ECG uploaded (claim check: the event carries the reference,
    never the waveform) and the reading requested; the service makes it STAT."""
    from yigongti_diagnosis.recording import to_csv
    from yigongti_diagnosis.synthetic import synthetic_stemi

    request_id = f"DXR-{uuid.uuid4().hex[:10]}"
    uploading = time.monotonic()
    async with j.http("diagnosis", "ecg-cart-1", TOWNSHIP, ["clinic_terminal"]) as cart:
        up = ok(await cart.post("/recordings", content=to_csv(synthetic_stemi()).encode(),
                                headers={"Content-Type": "text/csv"}), "ECG upload")
    uploaded_s = time.monotonic() - uploading
    m = up["measurements"] or {}
    now = datetime.now(UTC)
    requested = DiagnosisRequested(
        request_id=request_id, visit_id=j.facts["visit_id"], patient_ref=j.facts["patient_ref"],
        sex=Sex.male, age=Age(value=80, unit=AgeUnit.years), modality=Modality.ECG,
        recording_ref=up["recording_ref"], indications=("R07.4",),
        symptom_onset=now - timedelta(minutes=40),
        first_medical_contact_at=j.facts["first_medical_contact_at"],
        requesting_institution=TOWNSHIP, requesting_clinician=NURSE, requested_at=now)
    await j.terminal("diagnosis").publish(requested)
    j.facts.update(request_id=request_id, ecg_requested_at=now)
    queued = await j.events.one("queued.v1", request_id=request_id)
    if queued["priority"] != "stat":
        raise StepFailed(f"the ECG was queued {queued['priority']}, not STAT")
    if queued["reading_centre"] != ECG_CENTRE:
        raise StepFailed(f"the ECG went to {queued['reading_centre']}, not {ECG_CENTRE}")
    j.did(f"nurse {NURSE}", TOWNSHIP, f"recorded a 12-lead ECG (SYNTHETIC, label "
          f"{up['label']}; HR {m.get('heart_rate_bpm')}/min, QTc {m.get('qtc_ms')} ms) and "
          "sent it for reading", requested.CE_TYPE)
    j.timeline.note(f"(the upload and the service's automatic measurements took "
                    f"{uploaded_s:.1f} s)")
    j.did("diagnosis service", ECG_CENTRE, f"queued it STAT ({', '.join(queued['priority_reasons'])}"
          f"), due {queued['due_at'][11:19]} UTC", "queued.v1")


async def report_critical(j: Journey) -> None:
    """Step 3: claimed at the remote ECG centre, signed as a critical STEMI
    finding; the clinic's long-poll gets it and acknowledges with read-back."""
    request_id = j.facts["request_id"]
    async with j.http("diagnosis", ECG_READER, ECG_CENTRE,
                      ["diagnostician", "reads_ecg"]) as reader, \
            j.http("diagnosis", TOWNSHIP_DOCTOR, TOWNSHIP, ["clinician"]) as clinic:
        claimed = ok(await reader.post("/worklist/claim-next"), "claim")["claimed"]
        if claimed is None or claimed["request_id"] != request_id:
            raise StepFailed(f"the reader claimed {claimed and claimed['request_id']}")
        await j.events.one("claimed.v1", request_id=request_id)
        j.did(f"ECG reader {ECG_READER}", ECG_CENTRE, "claimed it from the top of the worklist",
              "claimed.v1")
        cursor = ok(await clinic.get("/feed", params={"limit": 500}), "feed")["next"]
        ok(await reader.post(f"/requests/{request_id}/report", json={
            "findings": "Sinus rhythm. ST elevation V1-V4 (SYNTHETIC tracing).",
            "impression": "Acute anterior STEMI (scripted reader).",
            "conclusions": ["I21.0"], "critical": True}), "sign the report")
        reported = await j.events.one("diagnosis.reported.v1", request_id=request_id)
        j.facts["diagnosed_at"] = datetime.fromisoformat(reported["signed_at"])
        j.did(f"ECG reader {ECG_READER}", ECG_CENTRE, "read acute anterior STEMI (I21.0) "
              "and signed it as a critical finding", "diagnosis.reported.v1")
        signed = time.monotonic()
        item = None
        while item is None and time.monotonic() - signed < DEADLINE_S:
            page = ok(await clinic.get("/feed", params={"after": cursor, "wait": 5}), "feed")
            cursor = page["next"]
            item = next((i for i in page["items"]
                         if i["type"].endswith("critical_finding.raised.v1")), None)
        if item is None:
            raise StepFailed("the critical finding never reached the clinic's feed")
    finding = item["data"]
    j.facts.update(finding_raised_at=datetime.fromisoformat(finding["raised_at"]))
    j.did(f"doctor {TOWNSHIP_DOCTOR}", TOWNSHIP, f"was told the critical finding on the "
          f"clinic's feed {(time.monotonic() - signed) * 1000:.0f} ms after signing "
          f"(to acknowledge by {finding['acknowledge_by'][11:19]} UTC)",
          "critical_finding.raised.v1")
    await j.terminal("diagnosis").publish(CriticalFindingAck(
        request_id=request_id, finding_id=finding["finding_id"], acknowledged_by=TOWNSHIP_DOCTOR,
        channel=AckChannel.terminal, read_back_confirmed=True,
        acknowledged_at=datetime.now(UTC)))
    await j.events.one("critical_finding.acknowledged.v1", request_id=request_id)
    j.did(f"doctor {TOWNSHIP_DOCTOR}", TOWNSHIP, "acknowledged it, reading the finding back",
          "critical_finding.acknowledged.v1")

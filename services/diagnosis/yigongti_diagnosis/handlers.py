"""One apply function per intake event: checks → store → events, in the kit's
consumer transaction, under the request's lock (locking.py). A record that can
never apply raises `Rejection` and is answered with IntakeRejected
(reason codes: contracts/yigongti_contracts/diagnosis/rejections.py)."""

from __future__ import annotations

import json

import asyncpg
from yigongti_contracts.diagnosis.codes import Modality
from yigongti_contracts.diagnosis.v1 import (
    CriticalFindingAck,
    DiagnosisCancelled,
    DiagnosisQueued,
    DiagnosisRequested,
    DiagnosisWithdrawn,
)
from yigongti_contracts.refdata import RefDataError
from yigongti_contracts.refdata import load as load_refdata
from yigongti_kit import timers
from yigongti_kit.consumer import Handler, Intake, Rejection

from . import critical, imaging, locking, triage, turnaround, worklist
from .events import emit
from .origin import Origin


async def apply_requested(conn: asyncpg.Connection, req: DiagnosisRequested,
                          origin: Origin, *, study: dict | None = None) -> None:
    if origin.sender_institution not in (None, req.requesting_institution):
        raise Rejection("forbidden_institution", [("requesting_institution",
                                                   "forbidden_institution")])
    try:
        centre = load_refdata().reading_centre_for(req.requesting_institution,
                                                   req.modality.value).id
    except (RefDataError, ValueError):
        raise Rejection("unknown_institution", [("requesting_institution", "unknown")]) from None
    if await conn.fetchval("SELECT true FROM requests WHERE request_id = $1", req.request_id):
        raise Rejection("request_exists", [("request_id", "exists")])
    measurements = None
    if req.modality is Modality.ECG:
        # Bound to the uploading institution and used once (one UPDATE: locking.py).
        row = await conn.fetchrow(
            """UPDATE recordings SET used_by = $2
                WHERE recording_ref = $1 AND institution_id = $3 AND used_by IS NULL
               RETURNING measurements""",
            req.recording_ref, req.request_id, req.requesting_institution)
        if row is None:
            raise Rejection("unknown_recording", [("recording_ref", "unknown")])
        measurements = json.loads(row["measurements"]) if row["measurements"] else None
    elif study is None:
        study = await imaging.check_or_park(conn, req, origin)
        if study is None:
            return  # parked: applied again when the study appears, or refused
    now = await timers.db_now(conn)
    priority, reasons = triage.priority_of(
        indications=req.indications, symptom_onset=req.symptom_onset,
        clinician_priority=req.clinician_priority, requested_at=req.requested_at,
        measurements=measurements)
    due_at = now + triage.due_after(centre, priority)
    inserted = await conn.fetchval(
        """INSERT INTO requests (request_id, visit_id, patient_ref, sex, age, modality,
               recording_ref, study_instance_uid, accession_number, study, indications,
               symptom_onset, first_contact_at, clinician_priority, requesting_institution,
               requesting_clinician, requested_at, reading_centre, priority, priority_rank,
               priority_reasons, due_at, status, queued_at)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10::jsonb, $11, $12, $13, $14,
                   $15, $16, $17, $18, $19, $20, $21, $22, 'queued', $23)
           ON CONFLICT (request_id) DO NOTHING RETURNING true""",
        req.request_id, req.visit_id, req.patient_ref, req.sex.value,
        req.age.model_dump_json(), req.modality.value, req.recording_ref,
        req.study_instance_uid, req.accession_number,
        json.dumps(study) if study is not None else None, list(req.indications),
        req.symptom_onset, req.first_medical_contact_at,
        req.clinician_priority.value if req.clinician_priority else None,
        req.requesting_institution, req.requesting_clinician, req.requested_at, centre,
        priority.value, triage.RANK[priority], list(reasons), due_at, now)
    if not inserted:
        raise Rejection("request_exists", [("request_id", "exists")])
    await timers.schedule(conn, worklist.OVERDUE_TIMER, req.request_id, at=due_at)
    row = {"reading_centre": centre, "modality": req.modality.value, "priority": priority.value}
    turnaround.record("requested_to_queued", req.requested_at, now, row)
    if req.modality is Modality.ECG:
        turnaround.record("first_contact_to_ecg", req.first_medical_contact_at,
                          await conn.fetchval("SELECT uploaded_at FROM recordings "
                                              "WHERE recording_ref = $1", req.recording_ref), row)
    await emit(conn, DiagnosisQueued(
        request_id=req.request_id, modality=req.modality, priority=priority,
        priority_reasons=reasons, due_at=due_at, reading_centre=centre,
        requesting_institution=req.requesting_institution, patient_ref=req.patient_ref,
        sex=req.sex, age=req.age, indications=req.indications,
        symptom_onset=req.symptom_onset, queued_at=now))


async def apply_cancelled(conn: asyncpg.Connection, cancel: DiagnosisCancelled,
                          origin: Origin) -> None:
    """Withdrawn until the report is signed, never after."""
    row = await locking.lock_request(conn, cancel.request_id)
    if row is None:
        if await imaging.withdraw_parked(conn, cancel.request_id, origin.sender_institution):
            return
        raise Rejection("unknown_request", [("request_id", "unknown")])
    if origin.sender_institution not in (None, row["requesting_institution"]):
        raise Rejection("forbidden_institution", [("request_id", "forbidden_institution")])
    if row["status"] == "reported":
        raise Rejection("already_reported", [("request_id", "reported")])
    if row["status"] == "withdrawn":
        raise Rejection("already_withdrawn", [("request_id", "withdrawn")])
    now = await timers.db_now(conn)
    await conn.execute(
        """UPDATE requests SET status = 'withdrawn', withdrawn_at = $2, claimed_by = NULL,
                  lease_until = NULL WHERE request_id = $1""", cancel.request_id, now)
    for kind in (worklist.LEASE_TIMER, worklist.OVERDUE_TIMER):
        await timers.cancel(conn, kind, cancel.request_id)
    await emit(conn, DiagnosisWithdrawn(
        request_id=cancel.request_id, requesting_institution=row["requesting_institution"],
        reason=cancel.reason, withdrawn_at=now))


APPLIERS = {
    DiagnosisRequested.CE_TYPE: apply_requested,
    DiagnosisCancelled.CE_TYPE: apply_cancelled,
    CriticalFindingAck.CE_TYPE: critical.apply_ack,
}


def _handler(apply) -> Handler:
    async def handle(intake: Intake) -> None:
        await apply(intake.conn, intake.event, Origin.of(intake))

    return handle


HANDLERS: dict[str, Handler] = {ce_type: _handler(a) for ce_type, a in APPLIERS.items()}

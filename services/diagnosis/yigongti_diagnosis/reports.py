"""Reports: signed by the reader who holds the claim, final once signed; a later
change is an amendment, a new revision, the original kept (revision 1 is never
changed). Signing raises the critical finding (critical.py), posts the reading
fee once (fees.py) and recognises the examination (互认, recognition)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from functools import cache
from importlib.resources import files

import asyncpg
import yaml
from pydantic import BaseModel, ConfigDict, Field
from yigongti_contracts.diagnosis.codes import AmendmentReason, ConclusionCode
from yigongti_contracts.diagnosis.v1 import (
    ChargesPosted,
    DiagnosisReported,
    ReportAmended,
    StudyRecognised,
)
from yigongti_kit import timers

from . import conclusions, critical, turnaround, worklist
from .events import emit
from .imaging import policy as recognition_policy
from .store import new_ref

MAX_TEXT = 8000


class ReportConflict(Exception):
    """Not the caller's claim, or not in the state the action needs (HTTP 409)."""


class ReportBody(BaseModel):
    """What the reader signs. Findings and impression stay in this service."""

    model_config = ConfigDict(extra="forbid")

    findings: str = Field(min_length=1, max_length=MAX_TEXT)
    impression: str = Field(min_length=1, max_length=MAX_TEXT)
    conclusions: tuple[ConclusionCode, ...] = Field(min_length=1, max_length=10)
    critical: bool


class AmendBody(ReportBody):
    reason: AmendmentReason


@cache
def fees() -> dict:
    return yaml.safe_load((files("yigongti_diagnosis") / "policy" / "fees.yaml")
                          .read_text("utf-8"))


async def sign(conn: asyncpg.Connection, row: asyncpg.Record, body: ReportBody,
               reader: str) -> dict:
    if row["status"] != "claimed" or row["claimed_by"] != reader:
        raise ReportConflict("the study is not claimed by the caller")
    conclusions.check(row["modality"], body.conclusions)
    now = await timers.db_now(conn)
    report_id = f"RPT-{row['request_id']}"[:64]
    await conn.execute(
        """INSERT INTO reports (report_id, request_id, revision, findings, impression,
                                conclusions, critical, reader, signed_at)
           VALUES ($1, $2, 1, $3, $4, $5, $6, $7, $8)""",
        report_id, row["request_id"], body.findings, body.impression, list(body.conclusions),
        body.critical, reader, now)
    await conn.execute(
        """UPDATE requests SET status = 'reported', reported_at = $2, lease_until = NULL
            WHERE request_id = $1""", row["request_id"], now)
    for kind in (worklist.LEASE_TIMER, worklist.OVERDUE_TIMER):
        await timers.cancel(conn, kind, row["request_id"])
    await emit(conn, DiagnosisReported(
        request_id=row["request_id"], report_id=report_id, modality=row["modality"],
        reading_centre=row["reading_centre"],
        requesting_institution=row["requesting_institution"], patient_ref=row["patient_ref"],
        conclusions=body.conclusions, critical=body.critical, reader=reader, signed_at=now))
    turnaround.record("claimed_to_reported", row["claimed_at"], now, row)
    if row["recording_ref"] is not None:
        turnaround.record("ecg_to_diagnosis", await conn.fetchval(
            "SELECT uploaded_at FROM recordings WHERE recording_ref = $1",
            row["recording_ref"]), now, row)
    finding_id = None
    if body.critical:
        finding_id = await critical.raise_finding(conn, row, report_id, body.conclusions[0], now)
    await _post_fee(conn, row, now)
    await _recognise(conn, row, now)
    return {"request_id": row["request_id"], "report_id": report_id, "revision": 1,
            "signed_at": now.isoformat(), "finding_id": finding_id}


async def amend(conn: asyncpg.Connection, row: asyncpg.Record, body: AmendBody,
                reader: str) -> dict:
    if row["status"] != "reported":
        raise ReportConflict("the study has no signed report")
    conclusions.check(row["modality"], body.conclusions)
    now = await timers.db_now(conn)
    last = await conn.fetchrow(
        "SELECT report_id, revision FROM reports WHERE request_id = $1 "
        "ORDER BY revision DESC LIMIT 1", row["request_id"])
    revision = last["revision"] + 1
    await conn.execute(
        """INSERT INTO reports (report_id, request_id, revision, findings, impression,
                                conclusions, critical, reader, reason, signed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        last["report_id"], row["request_id"], revision, body.findings, body.impression,
        list(body.conclusions), body.critical, reader, body.reason.value, now)
    await emit(conn, ReportAmended(
        request_id=row["request_id"], report_id=last["report_id"], revision=revision,
        requesting_institution=row["requesting_institution"], patient_ref=row["patient_ref"],
        conclusions=body.conclusions, critical=body.critical, reason=body.reason,
        amended_by=reader, amended_at=now))
    finding_id = None
    if body.critical and not await conn.fetchval(
            "SELECT true FROM critical_findings WHERE request_id = $1", row["request_id"]):
        finding_id = await critical.raise_finding(conn, row, last["report_id"],
                                                  body.conclusions[0], now)
    return {"request_id": row["request_id"], "report_id": last["report_id"],
            "revision": revision, "finding_id": finding_id}


async def _post_fee(conn: asyncpg.Connection, row: asyncpg.Record, now) -> None:
    """The reading fee, once per request (charges' primary key)."""
    table = fees()
    fee = table["fees"][row["modality"]]
    price = Decimal(fee["price"])
    charge_id = f"CHG-{row['request_id']}"[:64]
    posted = await conn.fetchval(
        """INSERT INTO charges (request_id, charge_id, item_code, amount, posted_at)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (request_id) DO NOTHING RETURNING true""",
        row["request_id"], charge_id, fee["item_code"], price, now)
    if posted:
        await emit(conn, ChargesPosted(
            request_id=row["request_id"], charge_id=charge_id, visit_id=row["visit_id"],
            patient_ref=row["patient_ref"], billing_institution=row["requesting_institution"],
            item_code=fee["item_code"], policy_category=table["policy_category"], quantity=1,
            unit_price=price, amount=price, price_table_id=table["table_id"], posted_at=now))


async def _recognise(conn: asyncpg.Connection, row: asyncpg.Record, now) -> None:
    """The examination (not the conclusion) is recognised for its window; it
    supersedes the patient's earlier recognition of the same modality."""
    days = recognition_policy()["validity_days"][row["modality"]]
    earlier = await conn.fetchval(
        """SELECT recognition_id FROM recognitions
            WHERE patient_ref = $1 AND modality = $2 AND valid_until > $3
            ORDER BY reported_at DESC LIMIT 1""", row["patient_ref"], row["modality"], now)
    recognition_id = new_ref("RCG")
    valid_until = now + timedelta(days=days)
    await conn.execute(
        """INSERT INTO recognitions (recognition_id, request_id, patient_ref, modality,
               performed_by, reading_centre, study_instance_uid, recording_ref, reported_at,
               valid_until, supersedes)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
        recognition_id, row["request_id"], row["patient_ref"], row["modality"],
        row["requesting_institution"], row["reading_centre"], row["study_instance_uid"],
        row["recording_ref"], now, valid_until, earlier)
    await emit(conn, StudyRecognised(
        recognition_id=recognition_id, request_id=row["request_id"], modality=row["modality"],
        patient_ref=row["patient_ref"], performed_by=row["requesting_institution"],
        study_instance_uid=row["study_instance_uid"], recording_ref=row["recording_ref"],
        reported_at=now, valid_until=valid_until, supersedes=earlier))

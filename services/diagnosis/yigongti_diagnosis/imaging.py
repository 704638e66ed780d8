"""Imaging intake (DX/CT/MR/US): the requested study is checked on the county
PACS over QIDO-RS (pacs.py). A study under another Accession Number is
refused (no one attaches another patient's study). A study the PACS does not
have (or a PACS that does not answer) parks the request: it is looked for again
every `pacs_recheck_seconds` and refused as `study_not_found` when the grace
period ends (policy/recognition.yaml). A parked request is kept after refusal."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib.resources import files

import asyncpg
import yaml
from yigongti_contracts.common import FieldError, IntakeRejected
from yigongti_contracts.diagnosis.v1 import DiagnosisRequested
from yigongti_kit import inbox, timers
from yigongti_kit.consumer import Rejection

from .events import SERVICE, emit
from .origin import Origin
from .pacs import PacsClient, PacsUnavailable, StudyOutcome

RECHECK_TIMER = "pacs_recheck"


@cache
def policy() -> dict:
    return yaml.safe_load((files("yigongti_diagnosis") / "policy" / "recognition.yaml")
                          .read_text("utf-8"))


@cache
def _client() -> PacsClient | None:
    try:
        return PacsClient.from_env()
    except RuntimeError:
        return None


async def _look(req: DiagnosisRequested) -> dict | None:
    """The study as recorded, or None when the PACS does not have it (or cannot say)."""
    client = _client()
    if client is None:
        return None
    try:
        check = await client.check_study(req.study_instance_uid, req.accession_number)
    except PacsUnavailable:
        return None
    if check.outcome is StudyOutcome.NOT_FOUND:
        return None
    if check.outcome is StudyOutcome.ACCESSION_MISMATCH:
        raise Rejection("accession_mismatch", [("accession_number", "mismatch")])
    study = check.study
    if req.modality.value not in study.modalities:
        raise Rejection("modality_mismatch", [("modality", "mismatch")])
    return {"modalities": list(study.modalities), "instance_count": study.instance_count,
            "series": [{"series_uid": s.series_uid, "modality": s.modality,
                        "instance_count": s.instance_count, "number": s.number}
                       for s in study.series]}


async def check_or_park(conn: asyncpg.Connection, req: DiagnosisRequested,
                        origin: Origin) -> dict | None:
    study = await _look(req)
    if study is not None:
        return study
    p = policy()
    inserted = await conn.fetchval(
        """INSERT INTO parked (request_id, payload, origin, give_up_at)
           VALUES ($1, $2::jsonb, $3::jsonb, db_now() + $4::interval)
           ON CONFLICT (request_id) DO NOTHING RETURNING true""",
        req.request_id, req.model_dump_json(), json.dumps(origin.to_dict()),
        timedelta(minutes=p["pacs_grace_minutes"]))
    if not inserted:
        raise Rejection("request_exists", [("request_id", "exists")])
    await timers.schedule(conn, RECHECK_TIMER, req.request_id,
                          after=timedelta(seconds=p["pacs_recheck_seconds"]))
    return None


async def on_recheck(conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
    from .handlers import apply_requested

    row = await conn.fetchrow(
        "SELECT * FROM parked WHERE request_id = $1 AND refused_at IS NULL FOR UPDATE",
        timer["key"])
    if row is None:
        return
    req = DiagnosisRequested.model_validate_json(row["payload"])
    origin = Origin(**json.loads(row["origin"]))
    try:
        study = await _look(req)
        if study is None:
            if await conn.fetchval("SELECT db_now() < $1", row["give_up_at"]):
                await timers.schedule(conn, RECHECK_TIMER, req.request_id, after=timedelta(
                    seconds=policy()["pacs_recheck_seconds"]))
                return
            raise Rejection("study_not_found", [("study_instance_uid", "not_found")])
        async with conn.transaction():
            await apply_requested(conn, req, origin, study=study)
        await conn.execute("DELETE FROM parked WHERE request_id = $1", req.request_id)
    except Rejection as exc:
        await conn.execute("UPDATE parked SET refused_at = db_now() WHERE request_id = $1",
                           req.request_id)
        await reject(conn, origin, exc.code, exc.fields)


async def withdraw_parked(conn: asyncpg.Connection, request_id: str,
                          sender: str | None) -> bool:
    """A cancellation of a parked request: it is refused no more, and forgotten."""
    row = await conn.fetchrow(
        "SELECT payload FROM parked WHERE request_id = $1 AND refused_at IS NULL FOR UPDATE",
        request_id)
    if row is None:
        return False
    req = DiagnosisRequested.model_validate_json(row["payload"])
    if sender not in (None, req.requesting_institution):
        raise Rejection("forbidden_institution", [("request_id", "forbidden_institution")])
    await conn.execute("DELETE FROM parked WHERE request_id = $1", request_id)
    await timers.cancel(conn, RECHECK_TIMER, request_id)
    return True


async def reject(conn: asyncpg.Connection, origin: Origin, code: str,
                 fields: list[tuple[str, str]]) -> None:
    """Answer a record refused after parking; it had no effect, so its ce_id may
    be sent again (its inbox row is forgotten), as the lab does."""
    await emit(conn, IntakeRejected(
        key=origin.answer_key, service=SERVICE, rejected_id=origin.ce_id,
        rejected_type=origin.ce_type, sender=origin.ce_source, reason=code,
        fields=tuple(FieldError(field=f, code=c) for f, c in fields[:10]),
        rejected_at=datetime.now(UTC)))
    await inbox.forget(conn, origin.ce_source, origin.ce_id)

"""Verification and amendment of an order's report by a lab physician, and the
mutual-recognition registry (检查检验结果互认) that verified results feed.

- Two physicians never verify the same report at once: each first tries the
  report's lock without waiting, and the second gets a conflict; then the
  order lock is taken as every change of an order takes it (locking.py).
- A verified result of a test on the recognition list is a recognised result
  for its validity window (catalogue); an amendment keeps the original result,
  supersedes the recognised one, and tells every order that reused it.
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg
from yigongti_contracts.lab.codes import AmendmentReason, Comparator, Flag
from yigongti_contracts.lab.parts import Observation, RecognisedResult, Recognition
from yigongti_contracts.lab.v1 import (
    LabReportAmended,
    LabReportVerified,
    RecognisedResultAmended,
)

from . import catalogue, critical, locking, store, turnaround_metrics
from .events import emit


class ReportConflict(Exception):
    """HTTP 409 with the reason."""


def report_id_of(order_id: str) -> str:
    return f"R-{order_id}"[:64]


async def lock_order(conn: asyncpg.Connection, order_id: str) -> asyncpg.Record | None:
    """The order, locked (locking.py), with the database clock ("now") and the
    report's latest revision ("revision", 1 before any report); ReportConflict
    at once when another physician is at the report."""
    if not await locking.try_lock_report(conn, order_id):
        raise ReportConflict("the report is being verified or amended by another physician")
    await locking.lock_order(conn, order_id)
    return await conn.fetchrow(
        """SELECT o.*, db_now() AS now,
                  (SELECT coalesce(max(revision), 1) FROM reports
                   WHERE report_id = $2) AS revision
           FROM orders o WHERE o.order_id = $1""",
        order_id, report_id_of(order_id))


def observation_of(row: asyncpg.Record) -> Observation:
    return Observation(
        observation_id=row["observation_id"], code=row["code"],
        value=Decimal(row["value"]) if row["value"] is not None else None,
        comparator=Comparator(row["comparator"]) if row["comparator"] else None,
        coded_value=row["coded_value"], unit=row["unit"],
        reference_low=Decimal(row["reference_low"]) if row["reference_low"] else None,
        reference_high=Decimal(row["reference_high"]) if row["reference_high"] else None,
        flag=Flag(row["flag"]), critical=row["critical"] is not None,
        delta_check_failed=row["delta_failed"],
    )


async def _recognise(conn, order: asyncpg.Record, rows, revision: int, verified_at
                     ) -> list[Recognition]:
    recognitions, stored = [], []
    for row in rows:
        window = catalogue.recognition_window(row["test_code"])
        if window is None:
            continue
        valid_until = verified_at + window
        stored.append((row["observation_id"], order["patient_ref"], row["test_code"],
                       report_id_of(order["order_id"]), revision, order["lab_centre"],
                       verified_at, valid_until))
        recognitions.append(Recognition(observation_id=row["observation_id"], code=row["code"],
                                        valid_until=valid_until))
    if stored:
        await conn.executemany(
            """INSERT INTO recognised_results (observation_id, patient_ref, test_code, report_id,
                                               revision, performed_by, verified_at, valid_until)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            stored)
    return recognitions


# The order's confirmed results become verified, the release is recorded in the
# report's history (a row per verification: a report released in parts has
# several at one revision, migrations/0011) and the tests move on, in one
# statement; the results come back with their tube's collection and receipt
# times (turnaround).
_VERIFY = """
WITH v AS (
    UPDATE results SET status = 'verified', verified_by = $2, verified_at = $3,
           report_revision = $4
    WHERE order_id = $1 AND status = 'confirmed' RETURNING *
), r AS (
    INSERT INTO reports (report_id, revision, order_id, by_staff, at)
    SELECT $5, $4, $1, $2, $3 WHERE EXISTS (SELECT 1 FROM v)
), t AS (
    UPDATE order_tests SET status = 'verified' WHERE order_id = $1 AND status = 'confirmed'
)
SELECT v.*, s.collected_at, s.received_at FROM v JOIN specimens s ON s.barcode = v.barcode
ORDER BY v.observation_id
"""


async def verify(conn: asyncpg.Connection, order: asyncpg.Record, *, physician: str) -> dict:
    """Verify every confirmed result of the order (the report, or its next part).
    `order` is `lock_order`'s row."""
    order_id = order["order_id"]
    verified_at, revision = order["now"], order["revision"]
    rows = await conn.fetch(_VERIFY, order_id, physician, verified_at, revision,
                            report_id_of(order_id))
    if not rows:
        raise ReportConflict("no confirmed results awaiting verification")
    await store.advance_specimens(conn, order_id)
    recognitions = await _recognise(conn, order, rows, revision, verified_at)
    turnaround_metrics.record_verified(order["priority"], rows)
    await emit(conn, LabReportVerified(
        order_id=order_id, report_id=report_id_of(order_id), patient_ref=order["patient_ref"],
        ordering_institution=order["ordering_institution"], lab_centre=order["lab_centre"],
        verified_by=physician, verified_at=verified_at,
        observations=tuple(observation_of(r) for r in rows),
        recognitions=tuple(recognitions),
    ))
    return {"report_id": report_id_of(order_id), "revision": revision,
            "verified": [r["observation_id"] for r in rows]}


async def amend(conn: asyncpg.Connection, order: asyncpg.Record, observation_id: str, *,
                value: Decimal | None, coded_value: str | None, reason: AmendmentReason,
                physician: str) -> dict:
    """A new revision with a corrected result; the original is kept (superseded).
    `order` is `lock_order`'s row."""
    order_id = order["order_id"]
    old = await conn.fetchrow(
        "SELECT * FROM results WHERE observation_id = $1 AND order_id = $2 FOR UPDATE",
        observation_id, order_id)
    if old is None:
        raise LookupError(observation_id)
    if old["status"] != "verified":
        raise ReportConflict(f"result is {old['status']}: only a verified result is amended")
    if (value is None) == (coded_value is None) or (value is None) != (old["value"] is None):
        raise ReportConflict("give the corrected value in the result's own form")
    report_id = report_id_of(order_id)
    revision = order["revision"] + 1
    amended_at = order["now"]
    count = await conn.fetchval("SELECT count(*) FROM results WHERE barcode = $1 AND code = $2",
                                old["barcode"], old["code"])
    new_id = f"{old['barcode']}.{old['code']}.{count + 1}"
    if value is not None:
        low = Decimal(old["reference_low"]) if old["reference_low"] else None
        high = Decimal(old["reference_high"]) if old["reference_high"] else None
        flag = catalogue.flag(value, (low, high) if old["reference_low"] or old["reference_high"]
                              else None)
        direction = catalogue.critical(old["code"], value, old["unit"])
    else:
        flag = catalogue.flag_coded(old["code"], coded_value)
        direction = catalogue.critical_coded(old["code"], coded_value)
    await conn.execute("UPDATE results SET status = 'superseded' WHERE observation_id = $1",
                       observation_id)
    new = await conn.fetchrow(
        """INSERT INTO results (observation_id, order_id, barcode, test_code, code, value,
                                comparator, coded_value, unit, reference_low, reference_high,
                                flag, critical, delta_failed, analyser_id, run_at, status,
                                confirmed_by, confirmed_at, verified_by, verified_at,
                                report_revision, supersedes, patient_ref)
           VALUES ($1,$2,$3,$4,$5,$6,NULL,$7,$8,$9,$10,$11,$12,false,$13,$14,'verified',
                   $15,$16,$17,$18,$19,$20,$21) RETURNING *""",
        new_id, order_id, old["barcode"], old["test_code"], old["code"],
        None if value is None else str(value), coded_value, old["unit"], old["reference_low"],
        old["reference_high"], flag.value, direction and direction.value, old["analyser_id"],
        old["run_at"], old["confirmed_by"], old["confirmed_at"], physician, amended_at,
        revision, observation_id, old["patient_ref"],
    )
    await conn.execute(
        """INSERT INTO reports (report_id, revision, order_id, by_staff, at, reason)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        report_id, revision, order_id, physician, amended_at, reason.value,
    )
    superseded = await conn.fetchrow(
        """UPDATE recognised_results SET superseded_at = $2
           WHERE observation_id = $1 AND superseded_at IS NULL RETURNING *""",
        observation_id, amended_at,
    )
    recognitions = []
    replacement = None
    if superseded is not None:
        await conn.execute(
            """INSERT INTO recognised_results (observation_id, patient_ref, test_code, report_id,
                                               revision, performed_by, verified_at, valid_until)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            new_id, superseded["patient_ref"], superseded["test_code"], report_id, revision,
            superseded["performed_by"], amended_at, superseded["valid_until"],
        )
        recognitions.append(Recognition(observation_id=new_id, code=old["code"],
                                        valid_until=superseded["valid_until"]))
        replacement = RecognisedResult(
            report_id=report_id, report_revision=revision, observation_id=new_id,
            performed_by=superseded["performed_by"], verified_at=amended_at,
            valid_until=superseded["valid_until"])
    await emit(conn, LabReportAmended(
        order_id=order_id, report_id=report_id, revision=revision, reason=reason,
        patient_ref=order["patient_ref"], ordering_institution=order["ordering_institution"],
        lab_centre=order["lab_centre"], amended_by=physician, amended_at=amended_at,
        observations=(observation_of(new),), superseded_observation_ids=(observation_id,),
        recognitions=tuple(recognitions),
    ))
    if superseded is not None:
        await _tell_reusers(conn, superseded, replacement, amended_at)
    # A corrected value in the critical range is a critical value of its own:
    # the clinic must hear it and read it back, whatever the original was.
    raised = None
    if direction is not None:
        raised = await critical.raise_critical(conn, new, direction, physician)
    return {"report_id": report_id, "revision": revision, "observation_id": new_id,
            "supersedes": observation_id, "critical_value": raised}


async def _tell_reusers(conn, superseded: asyncpg.Record,
                        replacement: RecognisedResult | None, amended_at) -> None:
    reused = RecognisedResult(
        report_id=superseded["report_id"], report_revision=superseded["revision"],
        observation_id=superseded["observation_id"], performed_by=superseded["performed_by"],
        verified_at=superseded["verified_at"], valid_until=superseded["valid_until"])
    # Whoever reused this report's result of the test, by any of its lines: a
    # reuse of a panel (CBC) records one line's observation, and matching that
    # id alone told the reuser of an amendment to that line but not to the others.
    reusers = await conn.fetch(
        """SELECT u.order_id, u.test_code, o.ordering_institution FROM result_reuses u
           JOIN orders o USING (order_id)
           JOIN recognised_results g ON g.observation_id = u.observation_id
           WHERE g.report_id = $1 AND g.test_code = $2 ORDER BY u.order_id""",
        superseded["report_id"], superseded["test_code"],
    )
    for r in reusers:
        await emit(conn, RecognisedResultAmended(
            order_id=r["order_id"], ordering_institution=r["ordering_institution"],
            test_code=r["test_code"], reused=reused, replacement=replacement,
            amended_at=amended_at,
        ))


async def recognised_for(conn: asyncpg.Connection, patient_ref: str,
                         test_codes: list[str]) -> dict[str, asyncpg.Record]:
    """The patient's latest recognised result of each test, valid now (the
    database clock): {test_code: recognised_results row}."""
    if not test_codes:
        return {}
    rows = await conn.fetch(
        """SELECT DISTINCT ON (test_code) * FROM recognised_results
           WHERE patient_ref = $1 AND test_code = ANY($2::text[]) AND superseded_at IS NULL
             AND valid_until > db_now() AND verified_at <= db_now()
           ORDER BY test_code, verified_at DESC""",
        patient_ref, test_codes,
    )
    return {r["test_code"]: r for r in rows}


def recognised_part(row: asyncpg.Record) -> RecognisedResult:
    return RecognisedResult(
        report_id=row["report_id"], report_revision=row["revision"],
        observation_id=row["observation_id"], performed_by=row["performed_by"],
        verified_at=row["verified_at"], valid_until=row["valid_until"])

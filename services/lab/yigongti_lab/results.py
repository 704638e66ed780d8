"""Results from analysers (AnalyserResults on intake, also from HL7 via the
MLLP bridge), their technical confirmation by a technologist, and the charge
each resulted test posts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
from yigongti_contracts.common import Age, AgeUnit, Sex
from yigongti_contracts.lab.codes import CriticalDirection, Flag
from yigongti_contracts.lab.parts import Observation
from yigongti_contracts.lab.v1 import (
    AnalyserResults,
    ChargesPosted,
    LabResultsConfirmed,
    LabResultsReported,
)
from yigongti_contracts.refdata import load as load_refdata
from yigongti_kit.consumer import Rejection

from . import catalogue, critical, store
from .domain import SpecimenState, TestStatus
from .events import emit
from .parking import Origin, Park, reject


class ConfirmConflict(Exception):
    """Nothing to confirm on this tube (HTTP 409)."""


def _now() -> datetime:
    return datetime.now(UTC)


async def apply_analyser_results(conn: asyncpg.Connection, results: AnalyserResults,
                                 origin: Origin) -> None:
    specimen = await conn.fetchrow(
        """SELECT s.*, o.lab_centre, o.sex, o.age_value, o.age_unit, o.patient_ref
           FROM specimens s JOIN orders o USING (order_id)
           WHERE s.barcode = $1 FOR UPDATE OF s""",
        results.barcode,
    )
    if specimen is None:
        raise Park("specimen", results.barcode, "barcode")
    if specimen["state"] in SpecimenState.RECEIVABLE:
        raise Park("received", results.barcode, "barcode")
    if specimen["state"] in (SpecimenState.REJECTED, SpecimenState.CANCELLED):
        raise Rejection(f"specimen_{specimen['state']}", [("barcode", specimen["state"])])
    if origin.sender_institution not in (None, specimen["lab_centre"]):
        raise Rejection("forbidden_institution", [("barcode", "forbidden_institution")])

    # Lines of a test cancelled after its tube was collected are stored too (a
    # result is never discarded, and it is what happens when the cancellation
    # comes after the result): they stay reported, are never confirmed and move
    # nothing on. Refusing them refused the whole run, losing the lines of the
    # tube's live tests with it. Live tests come last so they own a shared line.
    tests = await conn.fetch(
        "SELECT test_code, status FROM order_tests WHERE barcode = $1 ORDER BY status = 'cancelled' DESC",
        results.barcode,
    )
    line_of = {code: t["test_code"] for t in tests for code in catalogue.reported_codes(t["test_code"])}
    settled = {t["test_code"] for t in tests if t["status"] in (TestStatus.CONFIRMED,
                                                                 TestStatus.VERIFIED)}
    # A run sent again (the LIS bridge re-sends after an outage, with a new ce_id
    # the inbox cannot match) has no second effect: lines of this run already
    # stored are skipped. Without this the copy stored each line again,
    # superseding the first, reported the run twice, and once confirmed was
    # refused as "already_confirmed".
    seen = {r["code"] for r in await conn.fetch(
        "SELECT code FROM results WHERE barcode = $1 AND analyser_id = $2 AND run_at = $3",
        results.barcode, results.analyser_id, results.run_at)}
    fresh = [obs for obs in results.observations if obs.code not in seen]
    if not fresh:
        return
    problems = []
    standing = []  # lines of a test already confirmed
    for i, obs in enumerate(results.observations):
        if obs.code in seen:
            continue
        if obs.code not in line_of:
            problems.append((f"observations.{i}.code", "not_ordered"))
        elif line_of[obs.code] in settled:
            problems.append((f"observations.{i}.code", "already_confirmed"))
            standing.append(obs)
        elif obs.value is not None and obs.unit != catalogue.lookup(obs.code).unit:
            problems.append((f"observations.{i}.unit", "unit_mismatch"))
    if problems and (len(standing) < len(problems) or len(standing) == len(fresh)):
        raise Rejection(problems[0][1], problems)
    if standing:
        # A re-run of a tube whose tests were confirmed one by one: the confirmed
        # lines are refused (a correction is an amendment), the others still
        # replace their unconfirmed results. Refusing the whole run lost those.
        await reject(conn, origin, "already_confirmed", problems)
        fresh = [obs for obs in fresh if all(obs is not o for o in standing)]

    sex = Sex(specimen["sex"])
    age = Age(value=specimen["age_value"], unit=AgeUnit(specimen["age_unit"]))
    observations = []
    for obs in fresh:
        observations.append(await _store_result(conn, specimen, line_of[obs.code], obs, sex, age,
                                                results))
    await emit(conn, LabResultsReported(
        order_id=specimen["order_id"], barcode=results.barcode, analyser_id=results.analyser_id,
        run_at=results.run_at, observations=tuple(observations), reported_at=_now(),
    ))
    await _advance_tests(conn, specimen["order_id"], results.barcode)


async def _store_result(conn, specimen, test_code: str, obs, sex: Sex, age: Age,
                        results: AnalyserResults) -> Observation:
    # A re-run replaces what was reported and not yet confirmed.
    previous_runs = await conn.fetchval(
        """UPDATE results SET status = 'superseded' WHERE barcode = $1 AND code = $2
             AND status = 'reported' RETURNING observation_id""",
        results.barcode, obs.code,
    )
    count = await conn.fetchval("SELECT count(*) FROM results WHERE barcode = $1 AND code = $2",
                                results.barcode, obs.code)
    observation_id = f"{results.barcode}.{obs.code}.{count + 1}"
    if obs.value is not None:
        ref = catalogue.reference_range(obs.code, sex, age)
        flag = catalogue.flag(obs.value, ref)
        direction = catalogue.critical(obs.code, obs.value, obs.unit)
        delta = await _delta_failed(conn, specimen["patient_ref"], obs.code, obs.value,
                                    results.run_at)
    else:
        ref = None
        flag = catalogue.flag_coded(obs.code, obs.coded_value)
        direction = catalogue.critical_coded(obs.code, obs.coded_value)
        delta = False
    low, high = ref if ref else (None, None)
    await conn.execute(
        """INSERT INTO results (observation_id, order_id, barcode, test_code, code, value,
                                comparator, coded_value, unit, reference_low, reference_high,
                                flag, critical, delta_failed, analyser_id, run_at, status,
                                supersedes)
           VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,'reported',$17)""",
        observation_id, specimen["order_id"], results.barcode, test_code, obs.code,
        _text(obs.value), obs.comparator and obs.comparator.value, obs.coded_value, obs.unit,
        _text(low), _text(high), flag.value, direction and direction.value, delta,
        results.analyser_id, results.run_at, previous_runs,
    )
    return Observation(
        observation_id=observation_id, code=obs.code, value=obs.value, comparator=obs.comparator,
        coded_value=obs.coded_value, unit=obs.unit, reference_low=low, reference_high=high,
        flag=flag, critical=direction is not None, delta_check_failed=delta,
    )


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


async def _delta_failed(conn, patient_ref: str, code: str, value: Decimal, run_at) -> bool:
    """Delta check against the patient's previous verified result of the same line,
    from any member hospital's order."""
    previous = await conn.fetchrow(
        """SELECT r.value, r.run_at FROM results r JOIN orders o USING (order_id)
           WHERE o.patient_ref = $1 AND r.code = $2 AND r.status = 'verified'
             AND r.value IS NOT NULL AND r.run_at < $3
           ORDER BY r.run_at DESC LIMIT 1""",
        patient_ref, code, run_at,
    )
    if previous is None:
        return False
    return catalogue.delta_check(code, value, Decimal(previous["value"]),
                                 run_at - previous["run_at"])


async def _advance_tests(conn: asyncpg.Connection, order_id: str, barcode: str) -> None:
    """Tests whose every line has a live result become resulted and post their charge;
    the tube becomes resulted when all its tests are."""
    tests = await conn.fetch(
        """SELECT test_code, status FROM order_tests
           WHERE barcode = $1 AND status IN ('collected', 'ordered')""",
        barcode,
    )
    for test in tests:
        lines = catalogue.reported_codes(test["test_code"])
        have = await conn.fetchval(
            """SELECT count(DISTINCT code) FROM results
               WHERE barcode = $1 AND code = ANY($2::text[]) AND status <> 'superseded'""",
            barcode, list(lines),
        )
        if have == len(lines):
            await conn.execute(
                "UPDATE order_tests SET status = $3 WHERE order_id = $1 AND test_code = $2",
                order_id, test["test_code"], TestStatus.RESULTED,
            )
            await post_charge(conn, order_id, test["test_code"])
    await store.advance_specimens(conn, order_id)


async def post_charge(conn: asyncpg.Connection, order_id: str, test_code: str) -> None:
    """ChargesPosted once per test (the UNIQUE row makes a second call a no-op)."""
    item = catalogue.price_item(test_code)
    if item is None:
        return
    order = await conn.fetchrow("SELECT * FROM orders WHERE order_id = $1", order_id)
    posted_at = _now()
    region = load_refdata().institution(order["lab_centre"]).county
    table = catalogue.price_table(region, posted_at.year)
    unit_price = table.prices[item.item]
    charge_id = f"CH-{uuid.uuid4().hex[:20]}"
    inserted = await conn.fetchval(
        """INSERT INTO charges (charge_id, order_id, test_code, item_code, amount, posted_at)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (order_id, test_code) DO NOTHING
           RETURNING true""",
        charge_id, order_id, test_code, item.item, unit_price, posted_at,
    )
    if not inserted:
        return
    await emit(conn, ChargesPosted(
        order_id=order_id, charge_id=charge_id, visit_id=order["visit_id"],
        patient_ref=order["patient_ref"], billing_institution=order["ordering_institution"],
        test_code=test_code, item_code=item.item, policy_category=item.policy_category,
        quantity=1, unit_price=unit_price, amount=unit_price, price_table_id=table.id,
        posted_at=posted_at,
    ))


async def confirm(conn: asyncpg.Connection, barcode: str, *, staff_id: str) -> dict:
    """Technical confirmation (技术审核) of a tube's reported results; raises the
    critical values among them."""
    # Results of a test cancelled after it was resulted stay reported (kept, never
    # discarded) but are not confirmed: confirming them went on to verify and
    # recognise a result the clinic cancelled (its charge reversed).
    rows = await conn.fetch(
        """UPDATE results r SET status = 'confirmed', confirmed_by = $2, confirmed_at = db_now()
           WHERE r.barcode = $1 AND r.status = 'reported' AND NOT EXISTS (
               SELECT 1 FROM order_tests t WHERE t.order_id = r.order_id
                 AND t.test_code = r.test_code AND t.status = 'cancelled')
           RETURNING *""",
        barcode, staff_id,
    )
    if not rows:
        raise ConfirmConflict("no reported results awaiting confirmation on this tube")
    order_id = rows[0]["order_id"]
    confirmed_at = rows[0]["confirmed_at"]
    await conn.execute(
        """UPDATE order_tests t SET status = 'confirmed' WHERE t.barcode = $1
             AND t.status = 'resulted'
             AND NOT EXISTS (SELECT 1 FROM results r WHERE r.barcode = $1
                             AND r.test_code = t.test_code AND r.status = 'reported')""",
        barcode,
    )
    await store.advance_specimens(conn, order_id)
    ids = tuple(r["observation_id"] for r in sorted(rows, key=lambda r: r["observation_id"]))
    await emit(conn, LabResultsConfirmed(order_id=order_id, barcode=barcode, observation_ids=ids,
                                         confirmed_by=staff_id, confirmed_at=confirmed_at))
    raised = []
    for row in rows:
        if row["critical"]:
            raised.append(await critical.raise_critical(
                conn, row, CriticalDirection(row["critical"]), staff_id))
    return {"barcode": barcode, "confirmed": list(ids), "critical_values": raised,
            "flags": {r["observation_id"]: Flag(r["flag"]).value for r in rows}}

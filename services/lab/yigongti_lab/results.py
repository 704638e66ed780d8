"""Results from analysers (AnalyserResults on intake, also from HL7 via the
MLLP bridge), their technical confirmation by a technologist, and the charge
each resulted test posts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
from yigongti_contracts.common import Age, AgeUnit, Sex
from yigongti_contracts.lab.codes import CriticalDirection, Flag
from yigongti_contracts.lab.parts import AnalyserObservation, Observation
from yigongti_contracts.lab.v1 import (
    AnalyserResults,
    ChargesPosted,
    LabResultsConfirmed,
    LabResultsReported,
)
from yigongti_contracts.refdata import load as load_refdata
from yigongti_kit.consumer import Rejection

from . import catalogue, critical, locking, store
from .domain import SpecimenState, TestStatus
from .events import emit, emit_all
from .parking import Origin, Park, reject


class ConfirmConflict(Exception):
    """Nothing to confirm on this tube (HTTP 409)."""


def _now() -> datetime:
    return datetime.now(UTC)


# The tube, its order and everything a run is checked against, in one round
# trip: its tests (live ones last, so they own a line a cancelled test shares),
# the lines of this very run already stored, the lines with a live result, and
# the patient's previous verified result of each line (delta check, any member
# hospital's order).
_RUN_CONTEXT = """
SELECT s.order_id, s.state, s.collected_at, o.lab_centre, o.sex, o.age_value, o.age_unit,
       o.patient_ref,
       o.visit_id, o.ordering_institution,
       (SELECT coalesce(json_agg(json_build_object('test_code', t.test_code, 'status', t.status)
                                 ORDER BY t.status = 'cancelled' DESC), '[]')
          FROM order_tests t WHERE t.barcode = s.barcode) AS tests,
       (SELECT coalesce(array_agg(r.code), '{}') FROM results r
          WHERE r.barcode = s.barcode AND r.analyser_id = $2 AND r.run_at = $3) AS seen,
       (SELECT coalesce(array_agg(DISTINCT r.code), '{}') FROM results r
          WHERE r.barcode = s.barcode AND r.status <> 'superseded') AS live,
       (SELECT coalesce(json_agg(json_build_object('code', p.code, 'value', p.value,
                                                   'run_at', p.run_at)), '[]')
          FROM (SELECT DISTINCT ON (r.code) r.code, r.value, r.run_at
                FROM results r
                WHERE r.patient_ref = o.patient_ref AND r.code = ANY($4::text[])
                  AND r.status = 'verified' AND r.value IS NOT NULL AND r.run_at < $3
                ORDER BY r.code, r.run_at DESC) p) AS previous
FROM specimens s JOIN orders o ON o.order_id = s.order_id
WHERE s.barcode = $1 FOR UPDATE OF s
"""

# A run's lines in one statement: each replaces the line's result reported and
# not yet confirmed (a re-run), and is numbered after the line's earlier runs.
_STORE_LINES = """
WITH incoming AS (
    SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                         $13::boolean[])
        AS i(code, test_code, value, comparator, coded_value, unit, reference_low,
             reference_high, flag, critical, delta_failed)
), superseded AS (
    UPDATE results r SET status = 'superseded' FROM incoming i
    WHERE r.barcode = $1 AND r.code = i.code AND r.status = 'reported'
    RETURNING r.code, r.observation_id
), runs AS (
    SELECT code, count(*) AS n FROM results
    WHERE barcode = $1 AND code IN (SELECT code FROM incoming) GROUP BY code
)
INSERT INTO results (observation_id, order_id, barcode, test_code, code, value, comparator,
                     coded_value, unit, reference_low, reference_high, flag, critical,
                     delta_failed, analyser_id, run_at, status, supersedes, patient_ref)
SELECT $1 || '.' || i.code || '.' || (coalesce(runs.n, 0) + 1), $2, $1, i.test_code, i.code,
       i.value, i.comparator, i.coded_value, i.unit, i.reference_low, i.reference_high,
       i.flag, i.critical, i.delta_failed, $14, $15, 'reported', superseded.observation_id, $16
FROM incoming i LEFT JOIN runs ON runs.code = i.code
     LEFT JOIN superseded ON superseded.code = i.code
RETURNING code, observation_id
"""

# Tests whose every line has a live result become resulted, and post their
# charge once (the UNIQUE (order_id, test_code) row makes a second one a no-op).
_RESULT_TESTS = """
WITH resulted AS (
    UPDATE order_tests SET status = 'resulted'
    WHERE order_id = $1 AND test_code = ANY($2::text[]) AND status IN ('collected', 'ordered')
    RETURNING test_code
)
INSERT INTO charges (charge_id, order_id, test_code, item_code, amount, posted_at)
SELECT c.charge_id, $1, c.test_code, c.item_code, c.amount, $6
FROM unnest($3::text[], $2::text[], $4::text[], $5::numeric[])
         AS c(charge_id, test_code, item_code, amount)
WHERE c.item_code IS NOT NULL AND c.test_code IN (SELECT test_code FROM resulted)
ON CONFLICT (order_id, test_code) DO NOTHING
RETURNING test_code, charge_id
"""


async def apply_analyser_results(conn: asyncpg.Connection, results: AnalyserResults,
                                 origin: Origin) -> None:
    order_id = await locking.lock_tube(conn, results.barcode)
    if order_id is None:
        raise Park("specimen", results.barcode, "barcode")
    codes = [obs.code for obs in results.observations]
    specimen = await conn.fetchrow(_RUN_CONTEXT, results.barcode, results.analyser_id,
                                   results.run_at, codes)
    if specimen["state"] in SpecimenState.RECEIVABLE:
        # The receipt holds the order lock while it releases what waits for it.
        raise Park("received", results.barcode, "barcode", lock=("order", order_id))
    if specimen["state"] in (SpecimenState.REJECTED, SpecimenState.CANCELLED):
        raise Rejection(f"specimen_{specimen['state']}", [("barcode", specimen["state"])])
    if origin.sender_institution not in (None, specimen["lab_centre"]):
        raise Rejection("forbidden_institution", [("barcode", "forbidden_institution")])

    # Lines of a test cancelled after its tube was collected are stored too (a
    # result is never discarded, and it is what happens when the cancellation
    # comes after the result): they stay reported, are never confirmed and move
    # nothing on. Refusing them refused the whole run, losing the lines of the
    # tube's live tests with it.
    tests = specimen["tests"]
    line_of = {code: t["test_code"] for t in tests for code in catalogue.reported_codes(t["test_code"])}
    settled = {t["test_code"] for t in tests if t["status"] in (TestStatus.CONFIRMED,
                                                                 TestStatus.VERIFIED)}
    # A run sent again (the LIS bridge re-sends after an outage, with a new ce_id
    # the inbox cannot match) has no second effect: lines of this run already
    # stored are skipped.
    seen = set(specimen["seen"])
    fresh, problems = _usable_lines(results, line_of, settled, seen)
    if not fresh and not problems:
        return
    if not fresh:
        raise Rejection(problems[0][1], problems)
    if problems:
        # The good lines of a run are kept; the others (not ordered, wrong unit,
        # of a test already confirmed: a correction is an amendment) are refused
        # by name. Refusing the whole run lost the good ones with it.
        await reject(conn, origin, problems[0][1], problems)

    sex = Sex(specimen["sex"])
    age = Age(value=specimen["age_value"], unit=AgeUnit(specimen["age_unit"]))
    previous = {p["code"]: p for p in specimen["previous"]}
    lines = [_judge(obs, line_of[obs.code], sex, age, previous.get(obs.code), results.run_at)
             for obs in fresh]
    stored = dict(await conn.fetch(
        _STORE_LINES, results.barcode, specimen["order_id"], *_columns(lines),
        results.analyser_id, results.run_at, specimen["patient_ref"]))
    observations = tuple(line.observation(stored[line.code]) for line in lines)

    live = set(specimen["live"]) | {line.code for line in lines}
    complete = [t["test_code"] for t in tests
                if t["status"] in (TestStatus.COLLECTED, TestStatus.ORDERED)
                and set(catalogue.reported_codes(t["test_code"])) <= live]
    charges = await _result_tests(conn, specimen, complete) if complete else []
    await store.advance_specimens(conn, specimen["order_id"])
    await emit_all(conn, [LabResultsReported(
        order_id=specimen["order_id"], barcode=results.barcode, analyser_id=results.analyser_id,
        run_at=results.run_at, observations=observations, reported_at=_now(),
        patient_ref=specimen["patient_ref"], collected_at=specimen["collected_at"],
    ), *charges])


def _usable_lines(results: AnalyserResults, line_of: dict[str, str], settled: set[str],
                  seen: set[str]) -> tuple[list, list[tuple[str, str]]]:
    """The run's lines to store, and the problems of the others (field, code)."""
    fresh, problems, taken = [], [], set()
    for i, obs in enumerate(results.observations):
        if obs.code in seen:
            continue
        if obs.code not in line_of:
            problems.append((f"observations.{i}.code", "not_ordered"))
        elif line_of[obs.code] in settled:
            problems.append((f"observations.{i}.code", "already_confirmed"))
        elif obs.value is not None and obs.unit != catalogue.lookup(obs.code).unit:
            problems.append((f"observations.{i}.unit", "unit_mismatch"))
        elif obs.code in taken:
            problems.append((f"observations.{i}.code", "repeated_line"))
        else:
            taken.add(obs.code)
            fresh.append(obs)
    return fresh, problems


@dataclass(frozen=True)
class _Line:
    """One line of a run with the ranges, flag, critical limit and delta check
    that apply to this patient."""

    obs: AnalyserObservation
    test_code: str
    low: Decimal | None
    high: Decimal | None
    flag: Flag
    critical: CriticalDirection | None
    delta_failed: bool

    @property
    def code(self) -> str:
        return self.obs.code

    def observation(self, observation_id: str) -> Observation:
        obs = self.obs
        return Observation(
            observation_id=observation_id, code=obs.code, value=obs.value,
            comparator=obs.comparator, coded_value=obs.coded_value, unit=obs.unit,
            reference_low=self.low, reference_high=self.high, flag=self.flag,
            critical=self.critical is not None, delta_check_failed=self.delta_failed,
        )


def _judge(obs: AnalyserObservation, test_code: str, sex: Sex, age: Age,
           previous: dict | None, run_at: datetime) -> _Line:
    if obs.value is None:
        return _Line(obs, test_code, None, None, catalogue.flag_coded(obs.code, obs.coded_value),
                     catalogue.critical_coded(obs.code, obs.coded_value), False)
    ref = catalogue.reference_range(obs.code, sex, age)
    low, high = ref if ref else (None, None)
    delta = previous is not None and catalogue.delta_check(
        obs.code, obs.value, Decimal(previous["value"]),
        run_at - datetime.fromisoformat(previous["run_at"]))
    return _Line(obs, test_code, low, high, catalogue.flag(obs.value, ref),
                 catalogue.critical(obs.code, obs.value, obs.unit), delta)


def _columns(lines: list[_Line]) -> list[list]:
    """The lines as the column arrays of _STORE_LINES."""
    return [
        [line.code for line in lines],
        [line.test_code for line in lines],
        [_text(line.obs.value) for line in lines],
        [line.obs.comparator and line.obs.comparator.value for line in lines],
        [line.obs.coded_value for line in lines],
        [line.obs.unit for line in lines],
        [_text(line.low) for line in lines],
        [_text(line.high) for line in lines],
        [line.flag.value for line in lines],
        [line.critical and line.critical.value for line in lines],
        [line.delta_failed for line in lines],
    ]


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


async def _result_tests(conn: asyncpg.Connection, order: asyncpg.Record,
                        test_codes: list[str]) -> list[ChargesPosted]:
    """Mark the tests resulted and post their charges; the ChargesPosted to emit."""
    posted_at = _now()
    region = load_refdata().institution(order["lab_centre"]).county
    table = catalogue.price_table(region, posted_at.year)
    items = {code: catalogue.price_item(code) for code in test_codes}
    posted = await conn.fetch(
        _RESULT_TESTS, order["order_id"], test_codes,
        [f"CH-{uuid.uuid4().hex[:20]}" for _ in test_codes],
        [item and item.item for item in items.values()],
        [item and table.prices[item.item] for item in items.values()], posted_at)
    return [ChargesPosted(
        order_id=order["order_id"], charge_id=row["charge_id"], visit_id=order["visit_id"],
        patient_ref=order["patient_ref"], billing_institution=order["ordering_institution"],
        test_code=row["test_code"], item_code=items[row["test_code"]].item,
        policy_category=items[row["test_code"]].policy_category, quantity=1,
        unit_price=table.prices[items[row["test_code"]].item],
        amount=table.prices[items[row["test_code"]].item], price_table_id=table.id,
        posted_at=posted_at,
    ) for row in posted]


async def confirm(conn: asyncpg.Connection, barcode: str, *, staff_id: str) -> dict:
    """Technical confirmation (技术审核) of a tube's reported results, under the
    order's lock (locking.py); raises the critical values among them."""
    await locking.lock_tube(conn, barcode)
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

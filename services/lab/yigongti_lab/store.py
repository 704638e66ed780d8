"""SQL of the lab service. Functions take a connection; the caller owns the transaction."""

from __future__ import annotations

from datetime import datetime

import asyncpg
from yigongti_contracts.lab.v1 import LabOrderPlaced, SpecimenCollected
from yigongti_kit.telemetry import current_trace_headers

from .domain import SpecimenState, TestStatus, order_status


async def insert_order(conn: asyncpg.Connection, order: LabOrderPlaced, lab_centre: str,
                       avoided: frozenset[str] = frozenset()):
    """The order and its tests in one statement; its accepted_at (the database
    clock), or None when the order id is taken."""
    return await conn.fetchval(
        """WITH o AS (
               INSERT INTO orders (order_id, visit_id, patient_ref, sex, age_value, age_unit,
                                   ordering_institution, ordering_clinician, lab_centre,
                                   priority, ordered_at, traceparent)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $15)
               ON CONFLICT (order_id) DO NOTHING RETURNING order_id, accepted_at
           ), t AS (
               INSERT INTO order_tests (order_id, test_code, override_reason, status)
               SELECT o.order_id, t.code, t.reason, t.status
               FROM o, unnest($12::text[], $13::text[], $14::text[]) AS t(code, reason, status)
           )
           SELECT accepted_at FROM o""",
        order.order_id, order.visit_id, order.patient_ref, order.sex.value, order.age.value,
        order.age.unit.value, order.ordering_institution, order.ordering_clinician, lab_centre,
        order.priority.value, order.ordered_at,
        [t.code for t in order.tests],
        [t.override_reason and t.override_reason.value for t in order.tests],
        [TestStatus.AVOIDED if t.code in avoided else TestStatus.ORDERED for t in order.tests],
        current_trace_headers()[0],
    )


async def order_traces(conn: asyncpg.Connection, barcodes: list[str]) -> list[str]:
    """The traceparents of the orders these tubes belong to."""
    rows = await conn.fetch(
        """SELECT DISTINCT o.traceparent FROM order_tests t JOIN orders o USING (order_id)
           WHERE t.barcode = ANY($1::text[]) AND o.traceparent IS NOT NULL""", barcodes)
    return [r["traceparent"] for r in rows]


async def order_for_update(conn: asyncpg.Connection, order_id: str) -> asyncpg.Record | None:
    """The order, locked, with its tests' status as {test_code: status} in "tests"."""
    return await conn.fetchrow(
        """SELECT o.*, (SELECT coalesce(json_object_agg(t.test_code, t.status), '{}')
                        FROM order_tests t WHERE t.order_id = o.order_id) AS tests
           FROM orders o WHERE o.order_id = $1 FOR UPDATE""",
        order_id)


async def test_status(conn: asyncpg.Connection, order_id: str) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT test_code, status FROM order_tests WHERE order_id = $1", order_id
    )
    return {r["test_code"]: r["status"] for r in rows}


async def insert_specimen(conn: asyncpg.Connection, specimen: SpecimenCollected,
                          processing_state: str, stable_until) -> bool:
    """The tube, bound to its tests, in one statement; False when the barcode is
    already known."""
    return await conn.fetchval(
        """WITH s AS (
               INSERT INTO specimens (barcode, order_id, tube, processing_state, state,
                                      collected_at, centrifuged_at, collector_id,
                                      recollection_of, stable_until)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
               ON CONFLICT (barcode) DO NOTHING RETURNING barcode
           ), t AS (
               UPDATE order_tests SET status = $11, barcode = $1
               WHERE order_id = $2 AND test_code = ANY($12::text[])
                 AND EXISTS (SELECT 1 FROM s)
           )
           SELECT count(*) = 1 FROM s""",
        specimen.barcode, specimen.order_id, specimen.tube.value, processing_state,
        SpecimenState.COLLECTED, specimen.collected_at, specimen.centrifuged_at,
        specimen.collector_id, specimen.recollection_of, stable_until,
        TestStatus.COLLECTED, list(specimen.tests),
    )


async def order_view(conn: asyncpg.Connection, order_id: str) -> dict | None:
    order = await conn.fetchrow("SELECT * FROM orders WHERE order_id = $1", order_id)
    if order is None:
        return None
    tests = await conn.fetch(
        "SELECT test_code, status, barcode FROM order_tests WHERE order_id = $1 ORDER BY test_code",
        order_id,
    )
    specimens = await conn.fetch(
        """SELECT barcode, tube, processing_state, state, collected_at FROM specimens
           WHERE order_id = $1 ORDER BY collected_at, barcode""",
        order_id,
    )
    return {
        "order_id": order["order_id"],
        "visit_id": order["visit_id"],
        "patient_ref": order["patient_ref"],
        "ordering_institution": order["ordering_institution"],
        "lab_centre": order["lab_centre"],
        "priority": order["priority"],
        # Derived from the tests (DESIGN §5), never the stored column: that is
        # written once at acceptance and no transition updates it, so it stayed
        # "accepted" for the order's whole life.
        "status": order_status({r["test_code"]: r["status"] for r in tests}),
        "ordered_at": order["ordered_at"].isoformat(),
        "tests": [dict(r) for r in tests],
        "specimens": [{**dict(r), "collected_at": r["collected_at"].isoformat()}
                      for r in specimens],
    }


async def specimens_for_update(conn: asyncpg.Connection,
                               barcodes: list[str]) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(
        """SELECT s.*, o.ordering_institution, o.lab_centre FROM specimens s
           JOIN orders o USING (order_id)
           WHERE s.barcode = ANY($1::text[]) ORDER BY s.barcode FOR UPDATE OF s""",
        barcodes,
    )
    return {r["barcode"]: r for r in rows}


async def set_in_transit(conn: asyncpg.Connection, barcodes: list[str], *, shipment_id: str,
                         courier_id: str, logger_id: str, dispatched_at) -> None:
    await conn.execute(
        """UPDATE specimens SET state = $2, shipment_id = $3, courier_id = $4, logger_id = $5,
                  dispatched_at = $6, updated_at = db_now()
           WHERE barcode = ANY($1::text[])""",
        barcodes, SpecimenState.IN_TRANSIT, shipment_id, courier_id, logger_id, dispatched_at,
    )


async def cancel_tests(conn: asyncpg.Connection, order_id: str, codes: list[str], *,
                       reason: str, at) -> None:
    await conn.execute(
        """UPDATE order_tests SET status = $3, cancel_reason = $4, cancelled_at = $5
           WHERE order_id = $1 AND test_code = ANY($2::text[])""",
        order_id, codes, TestStatus.CANCELLED, reason, at,
    )


async def specimens_left_without_tests(conn: asyncpg.Connection, order_id: str) -> list[str]:
    """Tubes of the order all of whose tests are cancelled (nothing left to do)."""
    rows = await conn.fetch(
        """SELECT s.barcode FROM specimens s
           WHERE s.order_id = $1 AND s.state NOT IN ('cancelled', 'rejected')
             AND NOT EXISTS (SELECT 1 FROM order_tests t
                             WHERE t.barcode = s.barcode AND t.status <> 'cancelled')""",
        order_id,
    )
    return [r["barcode"] for r in rows]


# How far a received tube has come, in order; a tube is as far as the least
# advanced of its live (not cancelled) tests.
_PROGRESS = [SpecimenState.RECEIVED, SpecimenState.RESULTED, SpecimenState.CONFIRMED,
             SpecimenState.VERIFIED]


async def advance_specimens(conn: asyncpg.Connection, order_id: str) -> None:
    """Move each received tube of the order forward to the stage all its live
    tests have reached (resulted, confirmed, verified).

    One rule for every step that changes a test (results, confirmation,
    verification, cancellation): each step moving only its own "from" state left
    tubes whose tests advance at different paces (one test per analyser) or are
    cancelled midway stuck for good, e.g. "resulted" with every test verified."""
    await conn.execute(
        """UPDATE specimens s SET state = x.state, updated_at = db_now()
           FROM (SELECT barcode, CASE
                     WHEN bool_and(status = 'verified') THEN 'verified'
                     WHEN bool_and(status IN ('confirmed', 'verified')) THEN 'confirmed'
                     WHEN bool_and(status IN ('resulted', 'confirmed', 'verified'))
                         THEN 'resulted'
                     ELSE 'received' END AS state
                 FROM order_tests WHERE order_id = $1 AND status <> 'cancelled'
                   AND barcode IS NOT NULL
                 GROUP BY barcode) x
           WHERE s.barcode = x.barcode AND s.order_id = $1
             AND array_position($2::text[], s.state) IS NOT NULL
             AND array_position($2::text[], x.state) > array_position($2::text[], s.state)""",
        order_id, _PROGRESS,
    )


async def set_specimen_state(conn: asyncpg.Connection, barcodes: list[str], state: str) -> None:
    await conn.execute(
        "UPDATE specimens SET state = $2, updated_at = db_now() WHERE barcode = ANY($1::text[])",
        barcodes, state,
    )


async def specimen_for_receipt(conn: asyncpg.Connection, barcode: str) -> asyncpg.Record | None:
    """The tube, locked, with its order's institutions and its live tests ("tests")."""
    return await conn.fetchrow(
        """SELECT s.*, o.ordering_institution, o.lab_centre, o.patient_ref,
                  (SELECT coalesce(array_agg(t.test_code ORDER BY t.test_code), '{}')
                   FROM order_tests t
                   WHERE t.barcode = s.barcode AND t.status <> 'cancelled') AS tests
           FROM specimens s JOIN orders o ON o.order_id = s.order_id
           WHERE s.barcode = $1 FOR UPDATE OF s""",
        barcode,
    )


async def set_tests_status(conn: asyncpg.Connection, barcode: str, status: str) -> None:
    await conn.execute(
        "UPDATE order_tests SET status = $2 WHERE barcode = $1 AND status <> 'cancelled'",
        barcode, status,
    )


async def record_receipt(conn: asyncpg.Connection, barcode: str, *, state: str, received_at,
                         received_by: str, inspection: dict, logger: dict | None,
                         reasons: list[str] | None) -> None:
    await conn.execute(
        """UPDATE specimens SET state = $2, received_at = $3, received_by = $4,
                  inspection = $5, logger = $6, rejection_reasons = $7, updated_at = db_now()
           WHERE barcode = $1""",
        barcode, state, received_at, received_by, inspection, logger, reasons,
    )


# Scope checks of the HTTP routes (api.py): one statement each, whose answer is
# the same whether the id is absent or outside the caller's scope, so neither
# the answer nor the work done before it tells them apart.

async def readable(conn: asyncpg.Connection, order_id: str, institution: str, *,
                   staff: bool, clinic: bool) -> bool:
    """The order exists and `institution` reads it: as its lab centre (`staff`)
    or as its ordering institution (`clinic`)."""
    return bool(await conn.fetchval(
        """SELECT true FROM orders WHERE order_id = $1
             AND (($3 AND lab_centre = $2) OR ($4 AND ordering_institution = $2))""",
        order_id, institution, staff, clinic))


async def in_lab_scope(conn: asyncpg.Connection, lab_centre: str, *, order_id: str | None = None,
                       barcode: str | None = None, critical_id: str | None = None) -> bool:
    """The order, tube or critical value exists and is `lab_centre`'s."""
    if order_id is not None:
        sql = "SELECT true FROM orders WHERE order_id = $1 AND lab_centre = $2"
        key = order_id
    elif barcode is not None:
        sql = """SELECT true FROM specimens s JOIN orders o USING (order_id)
                 WHERE s.barcode = $1 AND o.lab_centre = $2"""
        key = barcode
    else:
        sql = """SELECT true FROM critical_values c JOIN orders o USING (order_id)
                 WHERE c.critical_id = $1 AND o.lab_centre = $2"""
        key = critical_id
    return bool(await conn.fetchval(sql, key, lab_centre))


async def specimen_scope(conn: asyncpg.Connection, barcode: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """SELECT s.barcode, s.state, o.lab_centre, o.ordering_institution FROM specimens s
           JOIN orders o USING (order_id) WHERE s.barcode = $1""",
        barcode,
    )


async def report_view(conn: asyncpg.Connection, order_id: str, order: dict) -> dict:
    rows = await conn.fetch(
        """SELECT observation_id, test_code, code, value, comparator, coded_value, unit,
                  reference_low, reference_high, flag, critical, delta_failed, status,
                  confirmed_by, verified_by, verified_at, report_revision, supersedes, barcode,
                  run_at
           FROM results WHERE order_id = $1
             -- superseded by an amendment (verified before), not a run replaced
             -- by a re-run before confirmation: that was never reported
             AND (status = 'verified' OR (status = 'superseded' AND verified_at IS NOT NULL))
           ORDER BY code, observation_id""",
        order_id,
    )
    revisions = await conn.fetch(
        """SELECT revision, by_staff, at, reason FROM reports WHERE order_id = $1
           ORDER BY revision, entry""",
        order_id,
    )
    return {
        "order": order,
        "report_id": f"R-{order_id}"[:64],
        "observations": [{**dict(r), "verified_at": r["verified_at"] and
                          r["verified_at"].isoformat(), "run_at": r["run_at"].isoformat()}
                         for r in rows],
        "revisions": [{**dict(r), "at": r["at"].isoformat()} for r in revisions],
    }


async def recognised_until(conn: asyncpg.Connection, order_id: str) -> dict[str, datetime]:
    """Observation id → end of its recognition, for the order's results recognised now."""
    rows = await conn.fetch(
        """SELECT g.observation_id, g.valid_until FROM recognised_results g
           JOIN results r USING (observation_id)
           WHERE r.order_id = $1 AND g.superseded_at IS NULL""",
        order_id)
    return {r["observation_id"]: r["valid_until"] for r in rows}


async def recognised_now(conn: asyncpg.Connection, patient_ref: str) -> list[dict]:
    rows = await conn.fetch(
        """SELECT g.test_code, g.observation_id, g.report_id, g.revision, g.performed_by,
                  g.verified_at, g.valid_until, r.code, r.value, r.unit, r.flag
           FROM recognised_results g JOIN results r USING (observation_id)
           WHERE g.patient_ref = $1 AND g.superseded_at IS NULL AND g.valid_until > db_now()
           ORDER BY g.test_code, g.verified_at DESC""",
        patient_ref,
    )
    return [{**dict(r), "verified_at": r["verified_at"].isoformat(),
             "valid_until": r["valid_until"].isoformat()} for r in rows]


async def worklist(conn: asyncpg.Connection, lab_centre: str) -> dict:
    """Tubes of the centre by stage, oldest first, with their age in minutes."""
    rows = await conn.fetch(
        """SELECT s.barcode, s.order_id, o.priority, s.state,
                  extract(epoch FROM db_now() - coalesce(s.received_at, s.collected_at)) / 60
                      AS age_minutes
           FROM specimens s JOIN orders o USING (order_id)
           WHERE o.lab_centre = $1 AND s.state IN ('in_transit', 'received', 'resulted',
                                                   'confirmed')
           ORDER BY CASE o.priority WHEN 'stat' THEN 0 WHEN 'urgent' THEN 1 ELSE 2 END,
                    coalesce(s.received_at, s.collected_at)""",
        lab_centre,
    )
    stages = {"in_transit": "in_transit", "received": "awaiting_results",
              "resulted": "awaiting_confirmation", "confirmed": "awaiting_verification"}
    queue: dict[str, list] = {name: [] for name in stages.values()}
    for r in rows:
        queue[stages[r["state"]]].append({
            "barcode": r["barcode"], "order_id": r["order_id"], "priority": r["priority"],
            "age_minutes": round(float(r["age_minutes"]), 1)})
    return {"lab_centre": lab_centre, "queue": queue}

"""Property tests over random interleavings of the lab's intake records and
staff actions (issue 3, "Checked by": every specimen ends in exactly one final
state, no result is lost, the derived order status is always consistent).

Hypothesis draws one order of 1–3 tubes (tests from the catalogue with their
tubes), the clinic's and the analyser's intake records (LabOrderPlaced,
SpecimenCollected per tube, SpecimenDispatched for all tubes or per tube,
AnalyserResults per tube with a value for every reported line or one run per
test from separate analysers, maybe a re-run of a tube with other values),
maybe a LabOrderCancelled of some or all tests, the lab staff's actions (receipt accepted or rejected with a reason,
technical confirmation, verification), duplicates of any of them, and runs them
in a random order.

Each step runs against the real PostgreSQL in its own transaction, as the
consumer and the HTTP routes would run it: an intake record through
`parking.run` with the lab's apply function (a `Rejection` is answered with
IntakeRejected as the kit's consumer answers it); a staff action through
`receipt.receive` / `results.confirm` / `reports.verify`, whose conflicts are
the 409s. Kafka is left out on purpose: these properties are about the lab's
state logic, which is all in the database transaction; the broker, the
envelope, signatures and the inbox's duplicate check by ce_id are covered by
the other lab tests. A duplicate here is therefore a *re-sent* record (a new
ce_id, as a terminal or LIS bridge re-sending after an outage produces), which
the inbox cannot catch and the domain must absorb.

After every step the derived order status is checked against the tests and
tubes. After the drawn steps the world finishes its work ("settle": the clinic
collects what still needs a tube, staff receive, the analyser re-runs what has
no result, staff confirm and verify; whatever is still parked is expired as its
grace-period timer would), and the end state is checked: every specimen in
exactly one final state, every analyser observation stored, still parked or
refused for a reason that holds, no double effect of a duplicate, and
consecutive ce_aggseq numbers per aggregate in the outbox.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib.resources import files
from pathlib import Path
from typing import Any

import asyncpg
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from labflow import new_patient
from yigongti_contracts.common import Age, AgeUnit, FieldError, IntakeRejected, Sex
from yigongti_contracts.lab.codes import CancellationReason, Priority, TubeType
from yigongti_contracts.lab.parts import AnalyserObservation, Inspection, LoggerReadout, OrderedTest
from yigongti_contracts.lab.v1 import (
    AnalyserResults,
    LabOrderCancelled,
    LabOrderPlaced,
    SpecimenCollected,
    SpecimenDispatched,
)
from yigongti_kit.consumer import Rejection
from yigongti_kit.db import create_pool
from yigongti_kit.migrations import kit_migrations, migrate
from yigongti_kit.outbox import add_event, number_events
from yigongti_lab import catalogue, parking, receipt, reports, results, store
from yigongti_lab.domain import SpecimenState, TestStatus, order_status
from yigongti_lab.events import AGGREGATE, EVENTS_TOPIC, SOURCE
from yigongti_lab.handlers import APPLIERS

CLINIC = "652325-B01"  # a township branch; its lab centre is LAB_CENTRE
LAB_CENTRE = "652325-L01"
TERMINAL = "/terminals/T-prop-1"
ANALYSER = "/analysers/AN-prop-1"

# What a tube of each kind may carry (catalogue codes; every test's catalogue
# tube is the tube named here).
TUBE_KINDS: dict[str, tuple[TubeType, tuple[tuple[str, ...], ...]]] = {
    "serum": (TubeType.serum_gold, (("K",), ("CTNI",), ("K", "CTNI"))),
    "edta": (TubeType.edta_k2, (("CBC",),)),
    "citrate": (TubeType.sodium_citrate, (("PT",), ("PT", "APTT"))),
}
# A normal and a critical value per result line (in the catalogue unit).
VALUES = {
    "K": ("4.2", "7.1"), "CTNI": ("5", "450"),
    "WBC": ("6.0", "41"), "HGB": ("140", "55"), "PLT": ("210", "12"),
    "PT": ("12", "41"), "INR": ("1.0", "4.2"), "APTT": ("31", "105"),
}
REJECTION_REASONS = ("haemolysed", "lipaemic", "clotted", "insufficient_volume", "wrong_tube",
                     "unlabelled", "label_mismatch", "transport_time_exceeded",
                     "temperature_excursion")
GOOD = {"not_haemolysed": True, "not_lipaemic": True, "not_clotted": True,
        "volume_sufficient": True, "right_tube": True, "label_matches": True}

ALL_SPECIMEN_STATES = {
    SpecimenState.COLLECTED, SpecimenState.IN_TRANSIT, SpecimenState.RECEIVED,
    SpecimenState.REJECTED, SpecimenState.RESULTED, SpecimenState.CONFIRMED,
    SpecimenState.VERIFIED, SpecimenState.AMENDED, SpecimenState.CANCELLED,
}
FINAL_SPECIMEN_STATES = {SpecimenState.VERIFIED, SpecimenState.AMENDED,
                         SpecimenState.REJECTED, SpecimenState.CANCELLED}
ALL_TEST_STATUSES = {
    TestStatus.ORDERED, TestStatus.COLLECTED, TestStatus.RECOLLECT, TestStatus.RESULTED,
    TestStatus.CONFIRMED, TestStatus.VERIFIED, TestStatus.CANCELLED, TestStatus.AVOIDED,
}
# The tube states a test of each status may sit on (while bound to that tube).
TUBE_STATES_FOR_TEST = {
    TestStatus.COLLECTED: {SpecimenState.COLLECTED, SpecimenState.IN_TRANSIT,
                           SpecimenState.RECEIVED},
    TestStatus.RECOLLECT: {SpecimenState.REJECTED},
    TestStatus.RESULTED: {SpecimenState.RECEIVED, SpecimenState.RESULTED},
    TestStatus.CONFIRMED: {SpecimenState.RECEIVED, SpecimenState.RESULTED,
                           SpecimenState.CONFIRMED},
    TestStatus.VERIFIED: {SpecimenState.RECEIVED, SpecimenState.RESULTED,
                          SpecimenState.CONFIRMED, SpecimenState.VERIFIED,
                          SpecimenState.AMENDED},
}


STAGES = (SpecimenState.RECEIVED, SpecimenState.RESULTED, SpecimenState.CONFIRMED,
          SpecimenState.VERIFIED)


def stage_of(live_tests: list[str]) -> str:
    """The stage of a received tube from its live tests' statuses."""
    if all(x == TestStatus.VERIFIED for x in live_tests):
        return SpecimenState.VERIFIED
    if all(x in (TestStatus.CONFIRMED, TestStatus.VERIFIED) for x in live_tests):
        return SpecimenState.CONFIRMED
    if all(x in (TestStatus.RESULTED, TestStatus.CONFIRMED, TestStatus.VERIFIED)
           for x in live_tests):
        return SpecimenState.RESULTED
    return SpecimenState.RECEIVED


# --- the drawn plan -------------------------------------------------------------


@dataclass(frozen=True)
class TubePlan:
    kind: str
    tests: tuple[str, ...]
    receipt: str  # "accept" or a rejection reason
    critical: tuple[bool, ...]  # per reported line: the critical value or the normal one
    split: bool  # each test on its own analyser (one run per test), else one run per tube
    rerun: bool  # the tube is run again (other values, a later run)

    @property
    def tube(self) -> TubeType:
        return TUBE_KINDS[self.kind][0]

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(code for t in self.tests for code in catalogue.reported_codes(t))


@dataclass(frozen=True)
class Plan:
    tubes: tuple[TubePlan, ...]
    cancel: tuple[str, ...] | None  # tests to cancel; () for the whole order; None: no cancel
    per_tube_dispatch: bool
    steps: tuple[tuple, ...]


@st.composite
def plans(draw) -> Plan:
    kinds = draw(st.lists(st.sampled_from(sorted(TUBE_KINDS)), min_size=1, max_size=3,
                          unique=True))
    tubes = []
    for kind in kinds:
        tests = draw(st.sampled_from(TUBE_KINDS[kind][1]))
        lines = [c for t in tests for c in catalogue.reported_codes(t)]
        tubes.append(TubePlan(
            kind=kind, tests=tests,
            receipt=draw(st.one_of(st.just("accept"), st.sampled_from(REJECTION_REASONS))),
            critical=tuple(draw(st.lists(st.booleans(), min_size=len(lines),
                                         max_size=len(lines)))),
            split=len(tests) > 1 and draw(st.booleans()),
            rerun=draw(st.integers(0, 3)) == 0,
        ))
    ordered = [t for tube in tubes for t in tube.tests]
    cancel = draw(st.one_of(
        st.none(), st.none(), st.just(()),
        st.lists(st.sampled_from(ordered), min_size=1, unique=True).map(tuple)))
    per_tube_dispatch = draw(st.booleans())
    n = len(tubes)
    base: list[tuple] = [("order",), ("verify",)]
    for i, tube in enumerate(tubes):
        base += [("collect", i), ("receive", i), ("confirm", i)]
        base += ([("results", i, j) for j in range(len(tube.tests))] if tube.split
                 else [("results", i, None)])
        if tube.rerun:
            base.append(("rerun", i))
    base += [("dispatch", i) for i in range(n)] if per_tube_dispatch else [("dispatch", None)]
    if cancel is not None:
        base.append(("cancel",))
    duplicates = draw(st.lists(st.sampled_from(base), max_size=4))
    steps = draw(st.permutations(base + duplicates))
    return Plan(tuple(tubes), cancel, per_tube_dispatch, tuple(steps))


# --- running a plan -------------------------------------------------------------


def _id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:14]}"


@dataclass
class Sent:
    """An intake record as the lab got it, and what became of it right away."""

    ce_id: str
    event: Any
    refused: tuple[str, list[tuple[str, str]]] | None = None


@dataclass
class World:
    pool: asyncpg.Pool
    plan: Plan
    order_id: str = field(default_factory=lambda: _id("O-"))
    patient_ref: str = field(default_factory=new_patient)
    barcodes: list[str] = field(default_factory=list)
    shipments: list[str] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    staff_refusals: list[tuple[tuple, str]] = field(default_factory=list)
    # every tube the world made: barcode -> (tube type, tests on it, line -> test)
    tubes: dict[str, tuple[TubeType, tuple[str, ...]]] = field(default_factory=dict)
    run_clock: int = 0
    _runs: dict[tuple, AnalyserResults] = field(default_factory=dict)

    def __post_init__(self) -> None:
        now = datetime.now(UTC)
        self.started = now
        self.barcodes = [_id("B") for _ in self.plan.tubes]
        self.shipments = [_id("S-") for _ in self.plan.tubes]
        for barcode, tube in zip(self.barcodes, self.plan.tubes, strict=True):
            self.tubes[barcode] = (tube.tube, tube.tests)
        self.order = LabOrderPlaced(
            order_id=self.order_id, visit_id=_id("V-"), patient_ref=self.patient_ref,
            sex=Sex.male, age=Age(value=61, unit=AgeUnit.years), ordering_institution=CLINIC,
            ordering_clinician="doc-17", priority=Priority.urgent,
            tests=tuple(OrderedTest(code=t) for tube in self.plan.tubes for t in tube.tests),
            ordered_at=now,
        )

    # -- records ---------------------------------------------------------------

    def collection(self, i: int) -> SpecimenCollected:
        tube = self.plan.tubes[i]
        return SpecimenCollected(
            barcode=self.barcodes[i], order_id=self.order_id, tests=tube.tests,
            tube=tube.tube, collected_at=self.started, collector_id="nurse-3")

    def dispatch(self, i: int | None) -> SpecimenDispatched:
        barcodes = tuple(self.barcodes) if i is None else (self.barcodes[i],)
        return SpecimenDispatched(
            shipment_id=self.shipments[0 if i is None else i], barcodes=barcodes,
            courier_id="courier-2", temperature_logger_id="logger-5",
            dispatched_at=self.started + timedelta(minutes=1))

    def analyser_run(self, barcode: str, lines: list[tuple[str, bool]],
                     analyser: str = "AN-7") -> AnalyserResults:
        """One run for a tube; each call is a new run (its own run_at)."""
        self.run_clock += 1
        return AnalyserResults(
            barcode=barcode, analyser_id=analyser,
            run_at=self.started + timedelta(minutes=5, seconds=self.run_clock),
            observations=tuple(AnalyserObservation(
                code=code, value=Decimal(VALUES[code][critical]),
                unit=catalogue.lookup(code).unit) for code, critical in lines))

    def results_record(self, i: int, j: int | None, *, rerun: bool = False) -> AnalyserResults:
        """The run of tube i (of its test j alone when split); built once, so a
        duplicate step re-sends the same run. A re-run has the other values."""
        if (i, j, rerun) not in self._runs:
            tube = self.plan.tubes[i]
            lines = [(line, critical != rerun) for line, critical
                     in zip(tube.lines, tube.critical, strict=True)
                     if j is None or line in catalogue.reported_codes(tube.tests[j])]
            self._runs[(i, j, rerun)] = self.analyser_run(
                self.barcodes[i], lines, analyser=f"AN-{j}" if j is not None else "AN-7")
        return self._runs[(i, j, rerun)]

    def cancellation(self) -> LabOrderCancelled:
        return LabOrderCancelled(
            order_id=self.order_id, tests=self.plan.cancel or None,
            reason=CancellationReason.clinical_change, cancelled_by="doc-17",
            cancelled_at=self.started + timedelta(minutes=2))

    # -- acting ----------------------------------------------------------------

    async def intake(self, event, sender: str | None) -> Sent:
        """As the consumer: apply or park in one transaction; a Rejection rolls the
        record's effects back and is answered with IntakeRejected."""
        sent = Sent(str(uuid.uuid4()), event)
        self.sent.append(sent)
        source = ANALYSER if isinstance(event, AnalyserResults) else TERMINAL
        origin = parking.Origin(sent.ce_id, event.CE_TYPE, source, event.kafka_key(), sender)
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    await parking.run(conn, event, origin, APPLIERS[event.CE_TYPE])
            except Rejection as exc:
                sent.refused = (exc.code, list(exc.fields))
                async with conn.transaction():  # what the kit's consumer writes
                    await add_event(conn, IntakeRejected(
                        key=origin.answer_key, service="lab", rejected_id=sent.ce_id,
                        rejected_type=event.CE_TYPE, sender=source, reason=exc.code,
                        fields=tuple(FieldError(field=f, code=c) for f, c in exc.fields),
                        rejected_at=datetime.now(UTC),
                    ), topic=EVENTS_TOPIC, source=SOURCE, aggregatetype=AGGREGATE,
                        key=origin.answer_key)
        return sent

    async def staff(self, step: tuple, action) -> Any:
        """As the HTTP route: one transaction; a conflict is a 409, unknown a 404."""
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    return await action(conn)
            except (receipt.ReceiptConflict, results.ConfirmConflict,
                    reports.ReportConflict, LookupError) as exc:
                self.staff_refusals.append((step, type(exc).__name__))
                return None

    async def receive(self, barcode: str, how: str, step: tuple) -> None:
        request = receipt_request(how, self.started)

        async def act(conn):
            return await receipt.receive(conn, barcode, request, staff_id="tech-8",
                                         appliers=APPLIERS)

        answer = await self.staff(step, act)
        if answer is not None:
            expected = "received" if how == "accept" else "rejected"
            assert answer["state"] == expected, (how, answer)
            assert answer["reasons"] == ([] if how == "accept" else [how]), (how, answer)

    async def confirm(self, barcode: str, step: tuple) -> None:
        async def act(conn):
            if await store.specimen_scope(conn, barcode) is None:
                raise LookupError(barcode)
            return await results.confirm(conn, barcode, staff_id="tech-8")

        await self.staff(step, act)

    async def verify(self, step: tuple) -> None:
        async def act(conn):
            order = await reports.lock_order(conn, self.order_id)
            if order is None:
                raise LookupError(self.order_id)
            return await reports.verify(conn, order, physician="phys-2")

        await self.staff(step, act)

    async def do(self, step: tuple) -> None:
        kind = step[0]
        if kind == "order":
            await self.intake(self.order, CLINIC)
        elif kind == "collect":
            await self.intake(self.collection(step[1]), CLINIC)
        elif kind == "dispatch":
            await self.intake(self.dispatch(step[1]), CLINIC)
        elif kind == "results":
            await self.intake(self.results_record(step[1], step[2]), LAB_CENTRE)
        elif kind == "rerun":
            await self.intake(self.results_record(step[1], None, rerun=True), LAB_CENTRE)
        elif kind == "cancel":
            await self.intake(self.cancellation(), CLINIC)
        elif kind == "receive":
            await self.receive(self.barcodes[step[1]], self.plan.tubes[step[1]].receipt, step)
        elif kind == "confirm":
            await self.confirm(self.barcodes[step[1]], step)
        elif kind == "verify":
            await self.verify(step)
        else:  # pragma: no cover
            raise AssertionError(step)

    # -- settling --------------------------------------------------------------

    async def settle(self) -> None:
        """The world finishes its work: the clinic collects (or recollects) what
        has no usable tube, staff receive, the analyser runs what has no result,
        staff confirm and verify; until nothing changes. Then what is still
        parked waits past its grace period and is expired."""
        for _ in range(4):
            before = await self.snapshot()
            await self._collect_missing()
            for barcode, state in await self.tube_states():
                if state in SpecimenState.RECEIVABLE:
                    await self.receive(barcode, "accept", ("settle-receive", barcode))
            await self._run_missing()
            for barcode, _ in await self.tube_states():
                await self.confirm(barcode, ("settle-confirm", barcode))
            await self.verify(("settle-verify",))
            await check_consistency(self)
            if await self.snapshot() == before:
                break
        await self._expire_parked()

    async def snapshot(self):
        async with self.pool.acquire() as conn:
            return (
                sorted(map(tuple, await conn.fetch(
                    "SELECT barcode, state FROM specimens WHERE order_id = $1", self.order_id))),
                sorted(map(tuple, await conn.fetch(
                    "SELECT test_code, status FROM order_tests WHERE order_id = $1",
                    self.order_id))),
            )

    async def tube_states(self) -> list[tuple[str, str]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT barcode, state FROM specimens WHERE order_id = $1 ORDER BY barcode",
                self.order_id)
        return [(r["barcode"], r["state"]) for r in rows]

    async def _collect_missing(self) -> None:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT t.test_code, t.status, t.barcode, s.state FROM order_tests t
                   LEFT JOIN specimens s USING (barcode)
                   WHERE t.order_id = $1 AND t.status IN ('ordered', 'recollect')""",
                self.order_id)
        groups: dict[tuple[TubeType, str | None], list[str]] = {}
        for r in rows:
            tube = catalogue.lookup(r["test_code"]).tube
            earlier = r["barcode"] if r["state"] == SpecimenState.REJECTED else None
            groups.setdefault((tube, earlier), []).append(r["test_code"])
        for (tube, earlier), tests in sorted(groups.items(), key=str):
            barcode = _id("B")
            self.tubes[barcode] = (tube, tuple(sorted(tests)))
            await self.intake(SpecimenCollected(
                barcode=barcode, order_id=self.order_id, tests=tuple(sorted(tests)), tube=tube,
                collected_at=datetime.now(UTC), collector_id="nurse-3",
                recollection_of=earlier), CLINIC)

    async def _run_missing(self) -> None:
        """A re-run of the live tests of a received tube that have no result."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT t.barcode, t.test_code FROM order_tests t JOIN specimens s USING (barcode)
                   WHERE t.order_id = $1 AND t.status = 'collected'
                     AND s.state IN ('received', 'resulted')
                   ORDER BY t.barcode, t.test_code""",
                self.order_id)
        lines: dict[str, list[tuple[str, bool]]] = {}
        for r in rows:
            lines.setdefault(r["barcode"], []).extend(
                (code, False) for code in catalogue.reported_codes(r["test_code"]))
        for barcode, obs in lines.items():
            await self.intake(self.analyser_run(barcode, obs), LAB_CENTRE)

    async def _expire_parked(self) -> None:
        """The grace period passes for whatever is still parked: its timer fires."""
        ids = [s.ce_id for s in self.sent]
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id FROM parked WHERE ce_id = ANY($1::text[]) AND expired_at IS NULL",
                ids)
            for row in rows:
                async with conn.transaction():
                    timer = await conn.fetchrow(
                        """UPDATE timers SET fired_at = db_now()
                           WHERE kind = $1 AND key = $2 AND fired_at IS NULL
                             AND cancelled_at IS NULL RETURNING *""",
                        parking.EXPIRY_TIMER, str(row["id"]))
                    assert timer is not None, f"parked row {row['id']} has no live timer"
                    await parking.on_expiry(conn, timer)


def receipt_request(how: str, collected_at: datetime) -> receipt.ReceiptRequest:
    inspection = dict(GOOD)
    extra: dict[str, Any] = {}
    if how == "haemolysed":
        inspection["free_haemoglobin_g_per_l"] = Decimal("1.2")
    elif how == "lipaemic":
        inspection["not_lipaemic"] = False
    elif how == "clotted":
        inspection["not_clotted"] = False
    elif how == "insufficient_volume":
        inspection["volume_sufficient"] = False
    elif how == "wrong_tube":
        inspection["right_tube"] = False
    elif how == "unlabelled":
        extra["labelled"] = False
    elif how == "label_mismatch":
        inspection["label_matches"] = False
    elif how == "transport_time_exceeded":
        extra["received_at"] = collected_at + timedelta(days=3)
    elif how == "temperature_excursion":
        extra["logger"] = LoggerReadout(logger_id="logger-5", min_celsius=Decimal("1.0"),
                                        max_celsius=Decimal("31.0"), minutes_outside_band=240)
    else:
        assert how == "accept", how
    return receipt.ReceiptRequest(inspection=Inspection(**inspection), **extra)


# --- invariants -----------------------------------------------------------------


async def check_consistency(world: World) -> None:
    """After every step: states are known ones, each test's status fits the
    state of its tube, each tube's state fits its tests, and the derived order
    status agrees with both (and with what the order view answers)."""
    async with world.pool.acquire() as conn:
        view = await store.order_view(conn, world.order_id)
        specimens = {r["barcode"]: r for r in await conn.fetch(
            "SELECT * FROM specimens WHERE order_id = $1", world.order_id)}
        tests = await conn.fetch("SELECT * FROM order_tests WHERE order_id = $1", world.order_id)
        live_results = {(r["barcode"], r["code"]): r["status"] for r in await conn.fetch(
            """SELECT barcode, code, status FROM results
               WHERE order_id = $1 AND status <> 'superseded'""", world.order_id)}
        result_count = Counter(r["barcode"] for r in await conn.fetch(
            "SELECT barcode FROM results WHERE order_id = $1", world.order_id))
        charged = {r["test_code"]: r for r in await conn.fetch(
            "SELECT * FROM charges WHERE order_id = $1", world.order_id)}
    if view is None:
        assert not specimens and not tests
        return
    status = {t["test_code"]: t["status"] for t in tests}
    derived = order_status(status)
    assert view["status"] == derived, (view["status"], derived, status)

    for t in tests:
        code, st_, barcode = t["test_code"], t["status"], t["barcode"]
        assert st_ in ALL_TEST_STATUSES, t
        if st_ == TestStatus.ORDERED:
            assert barcode is None, t
        elif st_ in TUBE_STATES_FOR_TEST:
            assert barcode in specimens, t
            assert specimens[barcode]["state"] in TUBE_STATES_FOR_TEST[st_], (
                code, st_, specimens[barcode]["state"])
        lines = catalogue.reported_codes(code)
        if st_ in (TestStatus.RESULTED, TestStatus.CONFIRMED, TestStatus.VERIFIED):
            # every line has a live result, at least as far along as the test
            want = {TestStatus.RESULTED: {"reported", "confirmed", "verified"},
                    TestStatus.CONFIRMED: {"confirmed", "verified"},
                    TestStatus.VERIFIED: {"verified"}}[st_]
            for line in lines:
                assert live_results.get((barcode, line)) in want, (code, st_, line, live_results)
            if catalogue.price_item(code) is not None:
                assert code in charged and charged[code]["reversed_at"] is None, (code, charged)
        if st_ == TestStatus.CANCELLED and code in charged:
            assert charged[code]["reversed_at"] is not None, (code, "charge not reversed")
        if st_ in (TestStatus.ORDERED, TestStatus.COLLECTED, TestStatus.RECOLLECT):
            assert code not in charged or charged[code]["reversed_at"] is not None, code

    for barcode, s in specimens.items():
        state = s["state"]
        assert state in ALL_SPECIMEN_STATES, s
        on_it = [status[t["test_code"]] for t in tests if t["barcode"] == barcode]
        if state == SpecimenState.CANCELLED:
            assert all(x == TestStatus.CANCELLED for x in on_it), (barcode, on_it)
        if state == SpecimenState.REJECTED:
            assert result_count[barcode] == 0, f"results applied to rejected tube {barcode}"
            assert all(x in (TestStatus.RECOLLECT, TestStatus.CANCELLED) for x in on_it), on_it
        if state in (SpecimenState.COLLECTED, SpecimenState.IN_TRANSIT):
            assert result_count[barcode] == 0, f"results on a tube not received {barcode}"
            assert all(x in (TestStatus.COLLECTED, TestStatus.CANCELLED) for x in on_it), on_it
        if state in (SpecimenState.VERIFIED, SpecimenState.AMENDED):
            assert all(x in (TestStatus.VERIFIED, TestStatus.CANCELLED) for x in on_it), on_it
        if state == SpecimenState.CONFIRMED:
            assert all(x in (TestStatus.CONFIRMED, TestStatus.VERIFIED, TestStatus.CANCELLED)
                       for x in on_it), on_it
            assert not all(x in (TestStatus.VERIFIED, TestStatus.CANCELLED) for x in on_it), (
                "all tests verified but the tube not", barcode, on_it)
        if state == SpecimenState.RESULTED:
            assert not any(x == TestStatus.COLLECTED for x in on_it), (barcode, on_it)
        live_on = [x for x in on_it if x != TestStatus.CANCELLED]
        if state in STAGES and live_on:
            # a received tube is exactly as far as the least advanced of its live tests
            assert state == stage_of(live_on), (barcode, state, on_it)
        if state != SpecimenState.CANCELLED:
            assert any(x != TestStatus.CANCELLED for x in on_it) or \
                state == SpecimenState.REJECTED or not on_it, (
                    "a tube left with only cancelled tests is cancelled", barcode, state, on_it)

    # The derived status against the tubes.
    live = {c: x for c, x in status.items() if x not in (TestStatus.CANCELLED, TestStatus.AVOIDED)}
    busy = [b for b, s in specimens.items() if s["state"] not in FINAL_SPECIMEN_STATES]
    if derived == "cancelled":
        assert not busy, ("cancelled order with a tube in progress", busy)
    if derived == "completed":
        assert not busy, ("completed order with a tube in progress", busy, status,
                          {b: s["state"] for b, s in specimens.items()})
        assert all(specimens[t["barcode"]]["state"] in (SpecimenState.VERIFIED,
                                                        SpecimenState.AMENDED)
                   for t in tests if t["test_code"] in live), specimens
    if derived == "accepted":  # no tube in progress (a rejected one may be, its test cancelled)
        assert all(s["state"] in (SpecimenState.CANCELLED, SpecimenState.REJECTED)
                   for s in specimens.values()), specimens
        assert all(t["barcode"] is None for t in tests if t["test_code"] in live), tests
    if derived in ("collecting", "in_testing", "partially_reported"):
        assert any(x != TestStatus.VERIFIED for x in live.values()), live


async def check_final(world: World) -> None:
    await check_consistency(world)
    async with world.pool.acquire() as conn:
        specimens = {r["barcode"]: r["state"] for r in await conn.fetch(
            "SELECT barcode, state FROM specimens WHERE order_id = $1", world.order_id)}
        tests = {r["test_code"]: r["status"] for r in await conn.fetch(
            "SELECT test_code, status FROM order_tests WHERE order_id = $1", world.order_id)}
        stored = Counter(
            (r["barcode"], r["code"], r["analyser_id"], r["run_at"]) for r in await conn.fetch(
                "SELECT barcode, code, analyser_id, run_at FROM results WHERE order_id = $1",
                world.order_id))
        ce_ids = [s.ce_id for s in world.sent]
        parked = {r["ce_id"] for r in await conn.fetch(
            "SELECT ce_id FROM parked WHERE ce_id = ANY($1::text[])", ce_ids)}
        answered = {}
        for r in await conn.fetch(
                """SELECT payload FROM outbox WHERE type = $1
                     AND payload->>'rejected_id' = ANY($2::text[])""",
                IntakeRejected.CE_TYPE, ce_ids):
            answered.setdefault(r["payload"]["rejected_id"], []).append(r["payload"])
        keys = [world.order_id, *world.tubes, *world.shipments]
        outbox = await conn.fetch(
            """SELECT aggregatetype, aggregateid, type, payload, NULL::bigint AS last
               FROM outbox WHERE aggregateid = ANY($1::text[]) ORDER BY seq""", keys)
        charges = await conn.fetch("SELECT * FROM charges WHERE order_id = $1", world.order_id)
        result_rows = await conn.fetch("SELECT * FROM results WHERE order_id = $1",
                                       world.order_id)
        criticals = Counter(r["observation_id"] for r in await conn.fetch(
            "SELECT observation_id FROM critical_values WHERE order_id = $1", world.order_id))
        recognised = await conn.fetch(
            """SELECT g.*, r.status FROM recognised_results g JOIN results r USING (observation_id)
               WHERE r.order_id = $1""", world.order_id)

    # Every specimen ends in exactly one final state; the order is done.
    # (none at all when the order was cancelled before any collection applied)
    for barcode, state in specimens.items():
        assert state in FINAL_SPECIMEN_STATES, (barcode, state, tests)
    assert set(tests.values()) <= {TestStatus.VERIFIED, TestStatus.CANCELLED}, tests
    assert order_status(tests) in ("completed", "cancelled"), tests
    assert (order_status(tests) == "cancelled") == all(
        x == TestStatus.CANCELLED for x in tests.values())

    # Intake records: applied, parked, or answered with IntakeRejected — one of them.
    for sent in world.sent:
        if sent.refused is not None:
            assert sent.ce_id in answered, sent
        answers = answered.get(sent.ce_id, [])
        # A dispatch waits tube by tube, so each part may be answered, each
        # naming its own tube; anything else is answered at most once.
        parts = [tuple(sorted((f["field"], f["code"]) for f in a["fields"])) for a in answers]
        assert len(set(parts)) == len(parts), ("answered twice", sent, answers)
        if not isinstance(sent.event, SpecimenDispatched):
            assert len(answers) <= 1, ("answered twice", sent, answers)

    # No result is lost.
    test_of_line = {}
    for barcode, (_, tests_on) in world.tubes.items():
        for t in tests_on:
            for line in catalogue.reported_codes(t):
                test_of_line[(barcode, line)] = t
    for sent in world.sent:
        if not isinstance(sent.event, AnalyserResults):
            continue
        ev = sent.event
        for i, obs in enumerate(ev.observations):
            key = (ev.barcode, obs.code, ev.analyser_id, ev.run_at)
            assert stored[key] <= 1, ("a run's line stored twice", key, stored[key])
            if stored[key] == 1 or sent.ce_id in parked:
                continue
            answers = answered.get(sent.ce_id)
            assert answers, ("observation lost: not stored, parked or refused", key)
            [answer] = answers
            tube_state = specimens.get(ev.barcode)
            test_state = tests.get(test_of_line[(ev.barcode, obs.code)])
            # Refused only for a reason that holds for this very line: its tube
            # rejected or cancelled, its test cancelled, or its test's result
            # already confirmed (a correction is an amendment, not a new run).
            said = {f["code"] for f in answer["fields"]
                    if f["field"] in ("barcode", f"observations.{i}.code")}
            justified = (
                tube_state in (SpecimenState.REJECTED, SpecimenState.CANCELLED)
                and said & {"rejected", "cancelled"}
                or test_state == TestStatus.CANCELLED
                or "already_confirmed" in said
                and test_state in (TestStatus.CONFIRMED, TestStatus.VERIFIED))
            assert justified, ("observation refused though its tube and test are live", key,
                               answer["reason"], answer["fields"], i, tube_state, test_state)

    # Duplicates have no double effect.
    by_type = Counter((row["type"].split(".")[-2], row["payload"].get("barcode")
                       or row["payload"].get("test_code")) for row in outbox
                      if row["aggregatetype"] == "lab_order")
    for barcode in specimens:
        assert by_type[("collection_recorded", barcode)] == 1, barcode
        assert by_type[("in_transit", barcode)] <= 1, barcode
        assert by_type[("received", barcode)] + by_type[("rejected", barcode)] <= 1, barcode
    assert sum(1 for r in outbox if r["type"].endswith("order.accepted.v1")) == 1
    runs = Counter((r["payload"]["barcode"], r["payload"]["run_at"]) for r in outbox
                   if r["type"].endswith("results.reported.v1"))
    assert all(n == 1 for n in runs.values()), ("a run reported twice", runs)
    assert len({c["test_code"] for c in charges}) == len(charges)
    posted = Counter(r["payload"]["test_code"] for r in outbox
                     if r["type"].endswith("charges.posted.v1"))
    assert posted == Counter(c["test_code"] for c in charges), (posted, charges)
    reversed_ = Counter(r["payload"]["charge_id"] for r in outbox
                        if r["type"].endswith("charges.reversed.v1"))
    assert all(n == 1 for n in reversed_.values()), reversed_
    assert set(reversed_) == {c["charge_id"] for c in charges if c["reversed_at"] is not None}
    for code, x in tests.items():
        priced = catalogue.price_item(code) is not None
        mine = [c for c in charges if c["test_code"] == code]
        if x == TestStatus.VERIFIED and priced:
            assert len(mine) == 1 and mine[0]["reversed_at"] is None, (code, mine)
        if x == TestStatus.CANCELLED:
            assert all(c["reversed_at"] is not None for c in mine), (code, mine)

    # A critical value is raised once per confirmed critical result, never for a
    # result that was not confirmed (a cancelled test's, a replaced run's); only
    # verified results of live tests are recognised.
    for r in result_rows:
        raised = r["critical"] is not None and r["status"] in ("confirmed", "verified")
        assert criticals[r["observation_id"]] == (1 if raised else 0), dict(r)
        if r["status"] in ("confirmed", "verified"):
            assert tests[r["test_code"]] != TestStatus.CANCELLED, dict(r)
    for g in recognised:
        assert g["status"] == "verified" and tests[g["test_code"]] == TestStatus.VERIFIED, dict(g)

    # ce_aggseq, as the relay numbers the rows when it publishes them:
    # consecutive from 1 per aggregate, in outbox order.
    numbers, _ = number_events(outbox)
    sequences: dict[tuple[str, str], list[int]] = {}
    for row, number in zip(outbox, numbers, strict=True):
        sequences.setdefault((row["aggregatetype"], row["aggregateid"]), []).append(number)
    for aggregate, seqs in sequences.items():
        assert seqs == list(range(1, len(seqs) + 1)), (aggregate, seqs)


# --- the test ---------------------------------------------------------------------


@pytest_asyncio.fixture
async def lab_pool(database_url: str, schema: str):
    """The lab's schema, migrated once for all examples of the test (each example
    uses its own order, barcodes and patient)."""
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, schema, [
            ("kit", kit_migrations()),
            ("lab", Path(str(files("yigongti_lab") / "migrations"))),
        ])
    finally:
        await conn.close()
    pool = await create_pool(database_url, schema, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@settings(max_examples=int(os.environ.get("YGT_LAB_PROPERTY_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(plan=plans())
async def test_any_interleaving_ends_consistent_and_loses_no_result(lab_pool, plan: Plan):
    """(More examples for a deeper search: YGT_LAB_PROPERTY_EXAMPLES=2000.)"""
    world = World(lab_pool, plan)
    for step in plan.steps:
        await world.do(step)
        await check_consistency(world)
    await world.settle()
    await check_final(world)

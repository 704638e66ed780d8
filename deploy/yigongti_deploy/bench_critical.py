"""A critical finding visible to the clinic (DESIGN §8: p99 under 100 ms at 200
events/s on the embedded stack), measured against the running lab.

Background load: lab journeys (bench_lab.STEPS) started at a steady pace, so
that the lab handles about `load` inputs/s (a journey is about 9 inputs).
Probes, a few a second alongside, from a terminal of another clinic (its feed
then holds its own events, as a township clinic's does): an order whose
potassium comes back at 6.9 mmol/L (critical above 6.2, DESIGN §5), taken to
its results; then the timed part. The technologist confirms the results over HTTP, which raises the
critical value, and the ordering clinic is waiting on its feed
(GET /feed?wait=…) with a clinician's token. Latency = from the start of the
confirming request to the clinic's long-poll answering with the
CriticalValueRaised; also to the event on lab.events.v1.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
import yaml
from yigongti_contracts.lab.parts import AnalyserObservation
from yigongti_contracts.lab.v1 import (
    AnalyserResults,
    CriticalValueRaised,
    LabOrderAccepted,
    LabResultsReported,
    SpecimenCollectionRecorded,
    SpecimenDispatched,
    SpecimenInTransit,
)
from yigongti_kit.db import connect
from yigongti_kit.intake_auth import TerminalSigner, parse_terminals, register_terminals

from .bench_common import BenchTarget, CpuMeter, summary_ms
from .bench_lab import (
    STEPS,
    Driver,
    Journey,
    StepFailed,
    _observations,
    journey,
    make_journey,
    open_driver,
)

INPUTS_PER_JOURNEY = 9  # 1 order, 1.5 tubes × (collect, receive, results, confirm), 1 dispatch, 1 verify
CRITICAL_K = Decimal("6.9")  # mmol/L; critical above 6.2 (DESIGN §5, catalogue.yaml)
TARGET_P99_MS = 100.0
# The clinic that waits for its critical values: another branch served by the same
# lab centre as the bench's terminal (refdata/changji.yaml), so that its feed
# holds its own few events, not the background's hundreds a second.
PROBE_CLINIC = "652325-B02"


@dataclass
class CriticalRun:
    load_target: float
    seconds: float
    background_inputs: int
    probes: int
    to_feed: list[float] = field(default_factory=list)
    to_event: list[float] = field(default_factory=list)
    confirm: list[float] = field(default_factory=list)  # the confirming request itself
    failures: Counter = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "load_target_inputs_per_s": self.load_target,
            "load_inputs_per_s": round(self.background_inputs / self.seconds, 1),
            "seconds": round(self.seconds, 1),
            "probes": self.probes,
            "confirm_to_clinic_feed": summary_ms(self.to_feed),
            "confirm_to_event": summary_ms(self.to_event),
            "confirm_request": summary_ms(self.confirm),
            "failures": dict(self.failures),
            "target_p99_ms": TARGET_P99_MS,
            "cpu_pct_of_a_core": self.cpu,
        }


class ClinicFeed:
    """The ordering clinic waiting on its feed: when each order's critical value
    reached it (perf_counter time)."""

    def __init__(self, driver: Driver, institution: str) -> None:
        self.driver = driver
        self.institution = institution
        self.arrived: dict[str, float] = {}
        self._waiters: dict[str, asyncio.Future] = {}
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        page = await self._get(0, 0)
        self._task = asyncio.create_task(self._follow(page["next"]))

    async def _get(self, after: int, wait: float) -> dict:
        token = self.driver.token(self.institution, "clinician")
        async with self.driver.http.get(
                f"{self.driver.target.lab_url}/feed",
                params={"after": after, "wait": wait, "limit": 500},
                headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientTimeout(wait + 30)) as response:
            response.raise_for_status()
            return await response.json()

    async def _follow(self, cursor: int) -> None:
        while True:
            page = await self._get(cursor, 5)
            now = time.perf_counter()
            cursor = page["next"]
            for item in page["items"]:
                if item["type"] == CriticalValueRaised.CE_TYPE:
                    self.arrived[item["order_id"]] = now
                    waiter = self._waiters.pop(item["order_id"], None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(now)

    async def wait(self, order_id: str, timeout: float) -> float:
        if order_id in self.arrived:
            return self.arrived[order_id]
        future = self._waiters.setdefault(order_id, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(future, timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def _probe_terminal(target: BenchTarget) -> TerminalSigner:
    """A terminal of PROBE_CLINIC, registered in the lab's terminal registry."""
    signer = TerminalSigner.generate(f"bench-probe-{secrets.token_hex(4)}")
    # Added beside the bench's own terminal: a terminals file loads authoritatively
    # and would revoke every terminal it does not list.
    entries = parse_terminals(yaml.safe_dump({"terminals": [signer.registry_entry(PROBE_CLINIC)]}),
                              "bench probe")
    conn = await connect(target.database_url, target.lab_schema)
    try:
        await register_terminals(conn, entries)
    finally:
        await conn.close()
    return signer


async def _probe(driver: Driver, signer: TerminalSigner, feed: ClinicFeed, index: int,
                 run: CriticalRun) -> None:
    """One critical potassium of PROBE_CLINIC, from order to the clinic's feed;
    the confirmation is timed."""
    j: Journey = make_journey(index * 2, PROBE_CLINIC)  # an even index: one tube
    (tube,) = j.tubes
    by_name = {s.name: s for s in STEPS}
    try:
        (accepted,) = await driver.ask("probe-order", j.order, LabOrderAccepted.CE_TYPE,
                                       [j.order_id], signer=signer)
        j.lab_centre = accepted.get("lab_centre")
        await driver.ask("probe-collect", tube, SpecimenCollectionRecorded.CE_TYPE,
                         [tube.barcode], signer=signer)
        dispatch = SpecimenDispatched(
            shipment_id=f"BS-{secrets.token_hex(8)}", barcodes=(tube.barcode,),
            courier_id="bench-courier-01", temperature_logger_id="bench-logger-01",
            dispatched_at=datetime.now(UTC), destination=j.lab_centre)
        await driver.ask("probe-dispatch", dispatch, SpecimenInTransit.CE_TYPE, [tube.barcode],
                         signer=signer)
        await by_name["receive"].run(driver, j)
        observations = [AnalyserObservation(code="K", value=CRITICAL_K, unit="mmol/L")]
        observations += [o for code in tube.tests if code != "K"
                         for o in _observations(code, j.order)]
        results = AnalyserResults(barcode=tube.barcode, analyser_id="bench-analyser-01",
                                  run_at=datetime.now(UTC), observations=tuple(observations))
        (reported,) = await driver.ask("probe-results", results, LabResultsReported.CE_TYPE,
                                       [tube.barcode], signer=driver.lis_signer)
        j.reported[tube.barcode] = reported
        started = time.perf_counter()
        await by_name["confirm"].run(driver, j)
        confirmed = time.perf_counter()
        event_at, _ = await driver.watcher.wait(CriticalValueRaised.CE_TYPE, j.order_id, None,
                                                driver.step_timeout)
        feed_at = await feed.wait(j.order_id, driver.step_timeout)
    except (StepFailed, TimeoutError) as exc:
        run.failures[getattr(exc, "reason", "timeout")] += 1
        return
    run.confirm.append(confirmed - started)
    run.to_event.append(event_at - started)
    run.to_feed.append(feed_at - started)


async def run_critical(target: BenchTarget, *, load: float = 200.0, seconds: float = 30.0,
                       probes_per_s: float = 4.0, step_timeout: float = 30.0) -> CriticalRun:
    """Background journeys at about `load` inputs/s for `seconds`, with
    `probes_per_s` critical potassiums timed from confirmation to the clinic."""
    signer = await _probe_terminal(target)
    async with open_driver(target, STEPS, step_timeout, 512) as (driver, active, _):
        feed = ClinicFeed(driver, PROBE_CLINIC)
        await feed.start()
        background: Counter = Counter()
        run = CriticalRun(load_target=load, seconds=seconds, background_inputs=0, probes=0)
        tasks: set[asyncio.Task] = set()

        async def pace(every: float, start) -> None:
            index = 0
            next_at = time.perf_counter()
            while time.perf_counter() < ends:
                task = asyncio.create_task(start(index))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                index += 1
                next_at += every
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

        driver.measuring = True  # background journeys count their inputs in `background`
        meter = CpuMeter(target).start()
        began = time.perf_counter()
        ends = began + seconds
        await asyncio.gather(
            pace(INPUTS_PER_JOURNEY / load,
                 lambda i: journey(driver, active, 1_000_000 + i, background)),
            pace(1 / probes_per_s, lambda i: _probe(driver, signer, feed, i, run)))
        await asyncio.gather(*tasks, return_exceptions=True)
        run.cpu = meter.stop()
        run.seconds = time.perf_counter() - began
        run.background_inputs = background["inputs"]
        run.probes = len(run.to_feed) + sum(run.failures.values())
        await feed.stop()
        return run


def report_lines(figures: dict[str, Any]) -> list[str]:
    feed, event = figures["confirm_to_clinic_feed"], figures["confirm_to_event"]
    request = figures["confirm_request"]
    met = feed["count"] and feed["p99_ms"] < figures["target_p99_ms"]
    failures = ", ".join(f"{k}×{v}" for k, v in figures["failures"].items()) or "none"
    return [
        "",
        f"critical value to the clinic: {figures['probes']} critical potassiums while the lab "
        f"handles {figures['load_inputs_per_s']:,.0f} inputs/s of journeys "
        f"(target {figures['load_target_inputs_per_s']:,.0f}), {figures['seconds']:.0f} s; "
        f"failures {failures}",
        f"  {'from the confirming request to':<34}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}",
        f"  {'the clinic feed (long-poll)':<34}{feed['p50_ms']:>9.1f}{feed['p95_ms']:>9.1f}"
        f"{feed['p99_ms']:>9.1f}{feed['max_ms']:>9.1f}",
        f"  {'the event on lab.events.v1':<34}{event['p50_ms']:>9.1f}{event['p95_ms']:>9.1f}"
        f"{event['p99_ms']:>9.1f}{event['max_ms']:>9.1f}",
        f"  {'its own answer (committed)':<34}{request['p50_ms']:>9.1f}{request['p95_ms']:>9.1f}"
        f"{request['p99_ms']:>9.1f}{request['max_ms']:>9.1f}",
        f"verdict: {'MET' if met else 'NOT MET'}: p99 {feed['p99_ms']:.1f} ms to the clinic "
        f"(target < {figures['target_p99_ms']:.0f} ms)",
    ]

"""The lab journey (DESIGN §8) driven end to end against the running lab service.

Each journey is one order with one or two tubes, taken through the steps of
`STEPS` in order:

    order     LabOrderPlaced        → LabOrderAccepted            (intake)
    collect   SpecimenCollected ×t  → SpecimenCollectionRecorded  (intake, per tube)
    dispatch  SpecimenDispatched    → SpecimenInTransit ×t        (intake, one shipment)
    receive   receipt + inspection over HTTP, per tube            (lab technologist)
    results   AnalyserResults ×t    → LabResultsReported          (intake, per tube)
    confirm   technical confirmation over HTTP, per tube          (lab technologist)
    verify    verification over HTTP, per order                   (lab physician)

A step runs only when the lab has it, detected at run time: an intake step when
the lab's handlers (the same installed code the service process runs) take
its record type, an HTTP step when the lab's /openapi.json has a matching POST
path whose request body our fields can fill. The journey is the longest
available prefix of the steps; each later step is one function and one `Step`.

Latency of an intake step: from signing and publishing the record to seeing
the answering event on lab.events.v1 (matched by barcode or order_id; an
`IntakeRejected` for the record fails it); of an HTTP step: the round trip.
Journey events handled = the inputs the lab handled successfully (intake
records and staff HTTP actions; each is one transaction with inbox, state and
outbox, the unit of the per-event floor); its rate is over the wall time of the
measured journeys (after a short warm-up), at the given concurrency (journeys
in flight at once).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from yigongti_contracts.common import Age, AgeUnit, IntakeRejected, Sex
from yigongti_contracts.lab.codes import Priority, TubeType
from yigongti_contracts.lab.parts import AnalyserObservation, OrderedTest
from yigongti_contracts.lab.v1 import (
    AnalyserResults,
    LabOrderAccepted,
    LabOrderPlaced,
    LabResultsReported,
    SpecimenCollected,
    SpecimenCollectionRecorded,
    SpecimenDispatched,
    SpecimenInTransit,
)
from yigongti_kit.auth import issue_token
from yigongti_kit.terminal import build_record

from .bench_common import BenchTarget, CpuMeter, summary_ms

# Tube layouts, alternated: one tube, or two (chemistry + CBC): 1.5 tubes per order.
TUBE_SETS: tuple[tuple[tuple[TubeType, tuple[str, ...]], ...], ...] = (
    ((TubeType.serum_gold, ("K", "NA", "CTNI")),),
    ((TubeType.serum_gold, ("K", "NA")), (TubeType.edta_k2, ("CBC",))),
)
PRIORITIES = (Priority.routine, Priority.routine, Priority.urgent, Priority.stat)


class StepFailed(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


# --- one journey ------------------------------------------------------------------


@dataclass
class Journey:
    index: int
    order: LabOrderPlaced
    tubes: list[SpecimenCollected]
    lab_centre: str | None = None
    reported: dict[str, dict] = field(default_factory=dict)  # barcode -> LabResultsReported

    @property
    def order_id(self) -> str:
        return self.order.order_id


def make_journey(index: int, institution: str) -> Journey:
    now = datetime.now(UTC)
    tube_set = TUBE_SETS[index % len(TUBE_SETS)]
    order = LabOrderPlaced(
        order_id=f"BO-{uuid.uuid4().hex[:16]}",
        visit_id=f"BV-{uuid.uuid4().hex[:12]}",
        # A patient per order, so mutual recognition never answers a repeat.
        patient_ref="v1:" + secrets.token_hex(32),
        sex=Sex.male if index % 2 else Sex.female,
        age=Age(value=30 + index % 50, unit=AgeUnit.years),
        ordering_institution=institution,
        ordering_clinician="bench-doc-01",
        priority=PRIORITIES[index % len(PRIORITIES)],
        tests=tuple(OrderedTest(code=c) for _, codes in tube_set for c in codes),
        ordered_at=now,
    )
    tubes = [
        SpecimenCollected(
            barcode=f"BB{uuid.uuid4().hex[:14].upper()}", order_id=order.order_id, tests=codes,
            tube=tube, collected_at=now, collector_id="bench-nurse-01",
        )
        for tube, codes in tube_set
    ]
    return Journey(index, order, tubes)


# --- what the lab offers ------------------------------------------------------------


@dataclass(frozen=True)
class HttpRoute:
    method: str
    path: str  # template, e.g. /specimens/{barcode}/receipt
    properties: frozenset[str] | None  # request body fields, None when unknown
    required: frozenset[str]


@dataclass
class Capabilities:
    intake_types: frozenset[str]
    openapi_paths: tuple[str, ...]
    routes: dict[str, HttpRoute] = field(default_factory=dict)  # step name -> route

    @classmethod
    async def detect(cls, lab_url: str, http_patterns: dict[str, Sequence[str]]) -> Capabilities:
        intake = _lab_intake_types()
        spec: dict = {}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(10)) as client, \
                    client.get(lab_url + "/openapi.json") as response:
                if response.status == 200:
                    spec = await response.json()
        except aiohttp.ClientError:
            pass
        if not spec:
            # A lab that serves its documentation only with a token (DOCS_PUBLIC=false,
            # the default) runs this same installed package: read its checked-in document.
            spec = _lab_openapi()
        paths = spec.get("paths", {})
        caps = cls(intake, tuple(sorted(paths)))
        for step, patterns in http_patterns.items():
            route = _find_route(spec, patterns)
            if route is not None:
                caps.routes[step] = route
        return caps


def _lab_openapi() -> dict:
    try:
        from yigongti_lab.openapi import PATH
    except Exception:  # noqa: BLE001 - the bench still runs the first slice
        return {}
    return json.loads(PATH.read_text())


def _lab_intake_types() -> frozenset[str]:
    """The record types the lab's intake consumer handles (the service process
    runs this same installed package)."""
    try:
        from yigongti_lab.handlers import HANDLERS
    except Exception:  # noqa: BLE001 - the bench still runs the first slice
        return frozenset({LabOrderPlaced.CE_TYPE, SpecimenCollected.CE_TYPE,
                          SpecimenDispatched.CE_TYPE})
    return frozenset(HANDLERS)


def _find_route(spec: dict, patterns: Sequence[str]) -> HttpRoute | None:
    for pattern in patterns:
        for path, operations in spec.get("paths", {}).items():
            if not re.search(pattern, path):
                continue
            for method in ("post", "put", "patch"):
                operation = operations.get(method)
                if operation is None:
                    continue
                properties, required = _body_fields(spec, operation)
                return HttpRoute(method.upper(), path, properties, required)
    return None


def _body_fields(spec: dict, operation: dict) -> tuple[frozenset[str] | None, frozenset[str]]:
    schema = (operation.get("requestBody", {}).get("content", {})
              .get("application/json", {}).get("schema"))
    if schema is None:
        return frozenset(), frozenset()
    schema = _resolve(spec, schema)
    if "properties" not in schema:
        return None, frozenset()
    return frozenset(schema["properties"]), frozenset(schema.get("required", ()))


def _resolve(spec: dict, schema: dict) -> dict:
    for _ in range(10):
        ref = schema.get("$ref")
        if ref is None:
            branches = schema.get("allOf") or ()
            if len(branches) == 1:
                schema = branches[0]
                continue
            return schema
        node: Any = spec
        for part in ref.lstrip("#/").split("/"):
            node = node.get(part, {})
        schema = node
    return schema


# --- events seen on lab.events.v1 --------------------------------------------------------


class EventWatcher:
    """Reads lab.events.v1 (all partitions assigned, no group: no join delay)
    and wakes whoever waits for an event by (ce_type, barcode or order_id), or
    for the rejection of a record by its ce_id."""

    def __init__(self) -> None:
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._arrived: dict[tuple[str, str], tuple[float, dict]] = {}
        self._waiters: dict[tuple[str, str], asyncio.Future] = {}
        self.seen: list[tuple[float, str]] = []  # (monotonic time, ce_type)

    async def start(self, target: BenchTarget) -> None:
        topic = target.topic("lab.events.v1")
        kwargs = {**target.kafka_kwargs("consumer", "bench-watch"), "group_id": None}
        self._consumer = AIOKafkaConsumer(**kwargs)
        await self._consumer.start()
        partitions = self._consumer.partitions_for_topic(topic)
        while not partitions:
            await self._consumer._client.force_metadata_update()
            partitions = self._consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in partitions]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=20)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    self._take(now, record)

    def _take(self, now: float, record) -> None:
        ce_type = next((v.decode() for k, v in record.headers or () if k == "ce_type"), "")
        self.seen.append((now, ce_type))
        try:
            payload = json.loads(record.value)
        except ValueError:
            return
        if ce_type == IntakeRejected.CE_TYPE:
            keys = [payload.get("rejected_id")]
        else:
            keys = [payload.get("barcode"), payload.get("order_id")]
        for key in keys:
            if not key:
                continue
            slot = (ce_type, key)
            self._arrived[slot] = (now, payload)
            waiter = self._waiters.pop(slot, None)
            if waiter is not None and not waiter.done():
                waiter.set_result((now, payload))

    async def wait(self, ce_type: str, key: str, ce_id: str | None,
                   timeout: float) -> tuple[float, dict]:
        """(time seen, payload) of the event; StepFailed on a rejection or timeout."""
        slot = (ce_type, key)
        rejection = (IntakeRejected.CE_TYPE, ce_id) if ce_id else None
        for s in (slot, rejection):
            if s in self._arrived:
                return self._check(s, *self._arrived.pop(s))
        loop = asyncio.get_running_loop()
        futures = {slot: self._waiters.setdefault(slot, loop.create_future())}
        if rejection:
            futures[rejection] = self._waiters.setdefault(rejection, loop.create_future())
        try:
            done, _ = await asyncio.wait(futures.values(), timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for s, fut in futures.items():
                if not fut.done():
                    self._waiters.pop(s, None)
                    fut.cancel()
        if not done:
            raise StepFailed("timeout", f"no {ce_type.split('.')[-2]} in {timeout:.0f} s")
        for s, fut in futures.items():
            if fut in done:
                self._arrived.pop(s, None)
                return self._check(s, *fut.result())
        raise AssertionError("unreachable")

    @staticmethod
    def _check(slot: tuple[str, str], seen_at: float, payload: dict) -> tuple[float, dict]:
        if slot[0] == IntakeRejected.CE_TYPE:
            raise StepFailed(f"rejected:{payload.get('reason')}",
                             json.dumps(payload.get("fields", [])[:3]))
        return seen_at, payload

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            await self._consumer.stop()


# --- the driver -----------------------------------------------------------------------


@dataclass
class StepStats:
    latencies: list[float] = field(default_factory=list)
    inputs: int = 0
    failures: Counter = field(default_factory=Counter)
    failure_examples: dict[str, str] = field(default_factory=dict)


class Driver:
    """What steps use: publish signed intake, wait for answers, call the lab over HTTP."""

    def __init__(self, target: BenchTarget, caps: Capabilities, producer: AIOKafkaProducer,
                 watcher: EventWatcher, http: aiohttp.ClientSession, step_timeout: float) -> None:
        self.target = target
        self.caps = caps
        self.producer = producer
        self.watcher = watcher
        self.http = http
        self.step_timeout = step_timeout
        self.signer = target.keys.signer()
        # Results come from the lab centre's LIS bridge, not from the clinic.
        lis = getattr(target.keys, "lis_signer", None)
        self.lis_signer = lis() if lis else self.signer
        self.intake_topic = target.topic("lab.intake.v1")
        self.stats: dict[str, StepStats] = defaultdict(StepStats)
        self.measuring = False
        self._tokens: dict[tuple[str, str], str] = {}

    def sample(self, step: str, seconds: float) -> None:
        if self.measuring:
            self.stats[step].latencies.append(seconds)

    async def publish(self, event, signer=None) -> tuple[str, float]:
        """Sign (as the clinic, or `signer`) and publish an intake record; (ce_id, start time)."""
        started = time.perf_counter()
        record = build_record(signer or self.signer, event)
        await self.producer.send_and_wait(self.intake_topic, value=record.value,
                                          key=record.key, headers=record.headers)
        return record.ce_id, started

    async def ask(self, step: str, event, answer_type: str, keys: Sequence[str],
                  signer=None) -> list[dict]:
        """Publish `event`, wait for `answer_type` for each key; one sample per key."""
        ce_id, started = await self.publish(event, signer)
        payloads = []
        for key in keys:
            seen_at, payload = await self.watcher.wait(answer_type, key, ce_id,
                                                       self.step_timeout)
            self.sample(step, seen_at - started)
            payloads.append(payload)
        return payloads

    def token(self, institution: str, role: str) -> str:
        slot = (institution, role)
        if slot not in self._tokens:
            self._tokens[slot] = issue_token(
                self.target.keys.auth_private_pem, user=f"bench-{role}", institution=institution,
                roles=[role], audience="lab", ttl_s=6 * 3600)
        return self._tokens[slot]

    async def call(self, step: str, values: dict[str, str], body: dict[str, Any],
                   role: str, institution: str) -> dict:
        """The step's HTTP route with path parameters from `values` and the body
        cut to the fields the route takes; one sample per call."""
        route = self.caps.routes[step]
        path = re.sub(r"\{(\w+)\}", lambda m: _path_value(m.group(1), values), route.path)
        if route.properties is not None:
            body = {k: v for k, v in body.items() if k in route.properties}
        started = time.perf_counter()
        try:
            async with self.http.request(
                    route.method, self.target.lab_url + path, json=body,
                    headers={"Authorization": f"Bearer {self.token(institution, role)}"},
                    timeout=aiohttp.ClientTimeout(self.step_timeout)) as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise StepFailed(f"http_error:{type(exc).__name__}") from None
        if response.status >= 300:
            raise StepFailed(f"http_{response.status}", text[:300])
        self.sample(step, time.perf_counter() - started)
        try:
            return json.loads(text)
        except ValueError:
            return {}


def _path_value(name: str, values: dict[str, str]) -> str:
    aliases = {"specimen_id": "barcode", "specimen": "barcode", "id": "order_id",
               "order": "order_id", "report_id": "order_id"}
    return values.get(name) or values[aliases.get(name, name)]


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- the steps ---------------------------------------------------------------------------

StepRun = Callable[[Driver, Journey], Awaitable[int]]


@dataclass(frozen=True)
class Step:
    name: str
    via: str  # "intake" or "http"
    run: StepRun  # returns the number of inputs the lab handled
    intake_type: str | None = None  # for "intake": the record type the lab must handle
    http_patterns: tuple[str, ...] = ()  # for "http": regexes over the OpenAPI paths
    body_fields: frozenset[str] = frozenset()  # for "http": the fields we can fill


async def step_order(d: Driver, j: Journey) -> int:
    (accepted,) = await d.ask("order", j.order, LabOrderAccepted.CE_TYPE, [j.order_id])
    j.lab_centre = accepted.get("lab_centre")
    return 1


async def step_collect(d: Driver, j: Journey) -> int:
    await asyncio.gather(*(
        d.ask("collect", tube, SpecimenCollectionRecorded.CE_TYPE, [tube.barcode])
        for tube in j.tubes))
    return len(j.tubes)


async def step_dispatch(d: Driver, j: Journey) -> int:
    dispatch = SpecimenDispatched(
        shipment_id=f"BS-{uuid.uuid4().hex[:16]}",
        barcodes=tuple(t.barcode for t in j.tubes),
        courier_id="bench-courier-01",
        temperature_logger_id="bench-logger-01",
        dispatched_at=datetime.now(UTC),
        destination=j.lab_centre,
    )
    await d.ask("dispatch", dispatch, SpecimenInTransit.CE_TYPE, [t.barcode for t in j.tubes])
    return 1


RECEIVE_FIELDS = frozenset({"barcode", "received_at", "arrived_at", "inspection", "logger",
                            "received_by", "temperature_celsius"})


async def step_receive(d: Driver, j: Journey) -> int:
    now = _iso(datetime.now(UTC))
    inspection = {"not_haemolysed": True, "not_lipaemic": True, "not_clotted": True,
                  "volume_sufficient": True, "right_tube": True, "label_matches": True}
    logger = {"logger_id": "bench-logger-01", "min_celsius": "4.0", "max_celsius": "6.5",
              "minutes_outside_band": 0}

    async def one(tube: SpecimenCollected) -> None:
        body = {"barcode": tube.barcode, "received_at": now, "arrived_at": now,
                "inspection": inspection, "logger": logger, "received_by": "bench-technologist",
                "temperature_celsius": "5.0"}
        answer = await d.call("receive", {"barcode": tube.barcode, "order_id": j.order_id},
                              body, "lab_technologist", _centre(j))
        if answer.get("state", "received") != "received":
            raise StepFailed(f"specimen_{answer.get('state')}", json.dumps(answer)[:300])

    await asyncio.gather(*(one(t) for t in j.tubes))
    return len(j.tubes)


async def step_results(d: Driver, j: Journey) -> int:
    async def one(tube: SpecimenCollected) -> None:
        results = AnalyserResults(
            barcode=tube.barcode,
            analyser_id="bench-analyser-01",
            run_at=datetime.now(UTC),
            observations=tuple(o for code in tube.tests for o in _observations(code, j.order)),
        )
        (reported,) = await d.ask("results", results, LabResultsReported.CE_TYPE,
                                  [tube.barcode], signer=d.lis_signer)
        j.reported[tube.barcode] = reported

    await asyncio.gather(*(one(t) for t in j.tubes))
    return len(j.tubes)


CONFIRM_FIELDS = frozenset({"barcode", "observation_ids", "confirmed_at", "confirmed_by"})


async def step_confirm(d: Driver, j: Journey) -> int:
    async def one(tube: SpecimenCollected) -> None:
        observations = j.reported.get(tube.barcode, {}).get("observations", [])
        body = {"barcode": tube.barcode,
                "observation_ids": [o["observation_id"] for o in observations],
                "confirmed_at": _iso(datetime.now(UTC)), "confirmed_by": "bench-technologist"}
        await d.call("confirm", {"barcode": tube.barcode, "order_id": j.order_id}, body,
                     "lab_technologist", _centre(j))

    await asyncio.gather(*(one(t) for t in j.tubes))
    return len(j.tubes)


VERIFY_FIELDS = frozenset({"order_id", "verified_at", "verified_by"})


async def step_verify(d: Driver, j: Journey) -> int:
    body = {"order_id": j.order_id, "verified_at": _iso(datetime.now(UTC)),
            "verified_by": "bench-physician"}
    await d.call("verify", {"order_id": j.order_id}, body, "lab_physician", _centre(j))
    return 1


def _centre(j: Journey) -> str:
    if not j.lab_centre:
        raise StepFailed("no_lab_centre")
    return j.lab_centre


def _observations(code: str, order: LabOrderPlaced) -> list[AnalyserObservation]:
    """Normal results for an ordered test (a panel gives its lines), from the
    lab's catalogue: the middle of the patient's reference range, in its unit."""
    try:
        from yigongti_lab import catalogue
    except Exception:  # noqa: BLE001
        return [AnalyserObservation(code=code, value=Decimal("4.2"), unit="mmol/L")]
    lines = catalogue.reported_codes(code) if hasattr(catalogue, "reported_codes") else (code,)
    observations = []
    for line in lines:
        test = catalogue.load_catalogue()[line]
        if test.unit is None:
            coded = sorted(test.normal_coded)[0] if test.normal_coded else "NEG"
            observations.append(AnalyserObservation(code=line, coded_value=coded))
            continue
        value = Decimal("1")
        if hasattr(catalogue, "reference_range"):
            low, high = catalogue.reference_range(line, order.sex, order.age) or (None, None)
            if low is not None and high is not None:
                value = (low + high) / 2
            elif high is not None:
                value = high / 2
            elif low is not None:
                value = low * Decimal("1.1")
        observations.append(AnalyserObservation(code=line, value=value.quantize(Decimal("0.01")),
                                                unit=test.unit))
    return observations


STEPS: tuple[Step, ...] = (
    Step("order", "intake", step_order, intake_type=LabOrderPlaced.CE_TYPE),
    Step("collect", "intake", step_collect, intake_type=SpecimenCollected.CE_TYPE),
    Step("dispatch", "intake", step_dispatch, intake_type=SpecimenDispatched.CE_TYPE),
    Step("receive", "http", step_receive,
         http_patterns=(r"/specimens/\{[^}/]+\}/(receipt|receive|reception|arrival|inspection)s?$",
                        r"/(receipts|receptions|arrivals)$"),
         body_fields=RECEIVE_FIELDS),
    Step("results", "intake", step_results, intake_type=AnalyserResults.CE_TYPE),
    Step("confirm", "http", step_confirm,
         http_patterns=(r"/specimens/\{[^}/]+\}/(results/)?(confirm|confirmation)s?$",
                        r"/results/\{[^}/]+\}/(confirm|confirmation)s?$"),
         body_fields=CONFIRM_FIELDS),
    Step("verify", "http", step_verify,
         http_patterns=(r"/orders/\{[^}/]+\}/(report/)?(verify|verification)s?$",
                        r"/reports/\{[^}/]+\}/(verify|verification)s?$"),
         body_fields=VERIFY_FIELDS),
)


def plan(caps: Capabilities, steps: Sequence[Step] = STEPS) -> tuple[list[Step], dict[str, str]]:
    """The steps to run (the longest available prefix) and why the others are not run."""
    active: list[Step] = []
    missing: dict[str, str] = {}
    for step in steps:
        reason = _unavailable(step, caps)
        if reason is None and not missing:
            active.append(step)
        else:
            missing[step.name] = reason or f"after {next(iter(missing))}"
    return active, missing


def _unavailable(step: Step, caps: Capabilities) -> str | None:
    if step.via == "intake":
        return None if step.intake_type in caps.intake_types else "lab does not handle it yet"
    route = caps.routes.get(step.name)
    if route is None:
        return "no HTTP route in the lab's OpenAPI yet"
    unfilled = route.required - step.body_fields
    if unfilled:
        return f"{route.method} {route.path} needs fields the bench does not fill: " \
               f"{', '.join(sorted(unfilled))}"
    return None


# --- the run ---------------------------------------------------------------------------


@dataclass
class JourneyRun:
    steps: list[Step]
    missing: dict[str, str]
    orders: int
    concurrency: int
    completed: int
    failed: int
    specimens: int
    inputs: int
    seconds: float
    output_events: Counter
    stats: dict[str, StepStats]
    profile: dict | None = None
    cpu: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        seconds = self.seconds or float("nan")
        return {
            "steps": [s.name for s in self.steps],
            "steps_not_run": self.missing,
            "orders": self.orders,
            "concurrency": self.concurrency,
            "journeys_completed": self.completed,
            "journeys_failed": self.failed,
            "specimens_completed": self.specimens,
            "inputs_handled": self.inputs,
            "seconds": round(self.seconds, 3),
            "specimens_per_s": round(self.specimens / seconds, 1),
            "journey_events_per_s": round(self.inputs / seconds, 1),
            "output_events": sum(self.output_events.values()),
            "output_events_per_s": round(sum(self.output_events.values()) / seconds, 1),
            "output_events_by_type": dict(self.output_events.most_common()),
            "per_step": {s.name: self._step(s) for s in self.steps},
            "cpu_pct_of_a_core": self.cpu,
            "profile": self.profile,
        }

    def _step(self, step: Step) -> dict[str, Any]:
        stats = self.stats.get(step.name) or StepStats()
        return {"via": step.via, "inputs": stats.inputs, **summary_ms(stats.latencies),
                "failures": dict(stats.failures), "failure_examples": stats.failure_examples}


async def run_journeys(
    target: BenchTarget,
    *,
    orders: int,
    concurrency: int,
    warmup: int = 20,
    step_timeout: float = 30.0,
    max_seconds: float = 120.0,
    steps: Sequence[Step] = STEPS,
    profile_to: Path | None = None,
) -> JourneyRun:
    """Drive `orders` journeys (after `warmup` unmeasured ones) with at most
    `concurrency` in flight; stops starting new ones after `max_seconds`."""
    async with open_driver(target, steps, step_timeout, concurrency * 2) as (driver, active,
                                                                             missing):
        return await _run_journeys(target, driver, active, missing, orders=orders,
                                   concurrency=concurrency, warmup=warmup,
                                   max_seconds=max_seconds, profile_to=profile_to)


@asynccontextmanager
async def open_driver(target: BenchTarget, steps: Sequence[Step], step_timeout: float,
                      connections: int):
    """A Driver on `target` (watcher, producer, HTTP session), the steps the lab
    has and why the others are not run; everything closed on exit."""
    caps = await Capabilities.detect(
        target.lab_url, {s.name: s.http_patterns for s in steps if s.via == "http"})
    active, missing = plan(caps, steps)
    watcher = EventWatcher()
    await watcher.start(target)
    producer = AIOKafkaProducer(**target.kafka_kwargs("producer", "bench-terminal"))
    await producer.start()
    # aiohttp, not httpx: httpx's pool spends O(connections) per request, and
    # the driver must cost the machine little next to the lab it measures.
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections))
    try:
        yield Driver(target, caps, producer, watcher, http, step_timeout), active, missing
    finally:
        await http.close()
        await producer.stop()
        await watcher.stop()


async def journey(driver: Driver, steps: Sequence[Step], index: int,
                  outcome: Counter) -> None:
    """One journey through `steps`; counted in `outcome` and the driver's stats
    while the driver is measuring."""
    j = make_journey(index, driver.target.keys.institution_id)
    for step in steps:
        try:
            handled = await step.run(driver, j)
        except StepFailed as exc:
            if driver.measuring:
                stats = driver.stats[step.name]
                stats.failures[exc.reason] += 1
                stats.failure_examples.setdefault(exc.reason, exc.detail)
                outcome["failed"] += 1
            return
        if driver.measuring:
            driver.stats[step.name].inputs += handled
            outcome["inputs"] += handled
    if driver.measuring:
        outcome["completed"] += 1
        outcome["specimens"] += len(j.tubes)


async def _run_journeys(target: BenchTarget, driver: Driver, active: list[Step],
                        missing: dict[str, str], *, orders: int, concurrency: int, warmup: int,
                        max_seconds: float, profile_to: Path | None) -> JourneyRun:
    outcome: Counter = Counter()

    async def drive(count: int, parallel: int, deadline: float) -> None:
        indices = iter(range(count))

        async def worker() -> None:
            for index in indices:
                if time.perf_counter() > deadline:
                    return
                await journey(driver, active, index, outcome)

        await asyncio.gather(*(worker() for _ in range(max(1, min(parallel, count)))))

    profiler = None
    try:
        if warmup:
            await drive(warmup, min(4, concurrency), time.perf_counter() + 60)
        driver.measuring = True
        profiler = _start_profiler(target, profile_to)
        meter = CpuMeter(target).start()
        started = time.perf_counter()
        await drive(orders, concurrency, started + max_seconds)
        ended = time.perf_counter()
        cpu = meter.stop()
        driver.measuring = False
        await asyncio.sleep(0.2)  # late events of the last journeys (not counted in the rate)
        produced = Counter(t for at, t in driver.watcher.seen if started <= at <= ended)
        return JourneyRun(
            steps=active, missing=missing, orders=orders, concurrency=concurrency,
            completed=outcome["completed"], failed=outcome["failed"],
            specimens=outcome["specimens"], inputs=outcome["inputs"], seconds=ended - started,
            output_events=produced, stats=dict(driver.stats),
            profile=_stop_profiler(profiler), cpu=cpu,
        )
    finally:
        if profiler is not None and profiler[0].poll() is None:
            profiler[0].kill()


# --- optional: py-spy on the lab process -----------------------------------------------


def _start_profiler(target: BenchTarget, out: Path | None):
    if out is None or target.lab_pid is None:
        return None
    exe = shutil.which("py-spy") or str(Path(__import__("sys").executable).parent / "py-spy")
    if not Path(exe).exists():
        print("py-spy not found (pip install py-spy into .venv); no profile taken")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [exe, "record", "--pid", str(target.lab_pid), "--rate", "200", "--format", "raw",
         "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, out


def _stop_profiler(profiler) -> dict | None:
    if profiler is None:
        return None
    proc, out = profiler
    import signal

    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None
    return summarise_profile(out) if out.exists() else None


def summarise_profile(path: Path, top: int = 15) -> dict:
    """Where the lab process spent its samples: the functions themselves (own)
    and, for the platform's code, including what they call (inclusive)."""
    own: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        total += n
        own[_short(frames[-1])] += n
        for frame in {_short(f) for f in frames if "yigongti" in f}:
            if not frame.startswith(_ENTRY_FRAMES):
                inclusive[frame] += n
    pct = lambda c: round(100 * c / total, 1) if total else 0.0  # noqa: E731
    return {
        "file": str(path),
        "samples": total,
        "own_pct": {f: pct(c) for f, c in own.most_common(top)},
        "platform_inclusive_pct": {f: pct(c) for f, c in inclusive.most_common(top)},
    }


# Frames on every stack of the service process: not worth listing.
_ENTRY_FRAMES = ("<module>", "main (", "run_service (", "ServiceRuntime.run_until_signalled")


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)"
    match = re.match(r"(.*) \((?:.*/)?([^/]+?):\d+\)$", frame)
    return f"{match.group(1)} ({match.group(2)})" if match else frame

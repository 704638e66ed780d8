"""The load generator (issue 14 item 4): many clinics at a chosen rate, sent
the way a terminal sends.

    clinics = make_clinics(20)                        # each its own key and patients
    await register(database_url, "lab", clinics)      # a dev or test stack's registry
    figures = await drive(LoadTarget.from_config(config), clinics, rate=50, seconds=30,
                          services=("lab",))

Open loop: record n is due n/rate seconds after the start, whether or not the
earlier ones were answered (a closed loop slows down with the service and
hides its queue). Slots go round the clinics; each clinic sends its own lab
journeys in order: the order, one collection per tube, the dispatch of its
tubes, then the next patient (a new patient_ref each time, so mutual
recognition never answers a repeat). Driving the referral service too
(`services=("lab", "referral")`), one patient in four is also referred up. Each record is captured with its ce_id
fixed and signed by its clinic's key when sent (sender.IntakeSender, the
terminal's own sender; the clinics share one producer connection).

Answered: the event that applies the record (client.ACCEPTED_BY) seen on
<service>.events.v1. Refused: the IntakeRejected naming its ce_id, counted by
reason. A record with neither by the end of the drain is lost: a service
answers every record whose sender it verified, so a lost record means a
stalled service or a terminal it does not know. Latency: from handing the
record to the producer to its answer (accepted or refused).

Schedule and Tally hold the pacing and the counting and do no I/O (unit
tested); AnswerWatcher and drive() are the Kafka side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from yigongti_contracts.base import StrictModel
from yigongti_contracts.common import Age, AgeUnit, Sex
from yigongti_contracts.lab.codes import Priority, TubeType
from yigongti_contracts.lab.parts import OrderedTest
from yigongti_contracts.lab.v1 import LabOrderPlaced, SpecimenCollected, SpecimenDispatched
from yigongti_contracts.registry import SERVICE_MODULES
from yigongti_contracts.topics import topic_name
from yigongti_kit.intake_auth import TerminalSigner

from .client import ACCEPTED_BY, REJECTED, record_value
from .config import TerminalConfig
from .queue import Queued
from .sender import IntakeSender, LinkDown, route_cluster

# Tube layouts, alternated: one tube, or two (chemistry + blood count): 1.5
# tubes and 3.5 records per journey (the lab bench's journeys, bench_lab.py).
TUBE_SETS: tuple[tuple[tuple[TubeType, tuple[str, ...]], ...], ...] = (
    ((TubeType.serum_gold, ("K", "NA", "CTNI")),),
    ((TubeType.serum_gold, ("K", "NA")), (TubeType.edta_k2, ("CBC",))),
)
PRIORITIES = (Priority.routine, Priority.routine, Priority.urgent, Priority.stat)
# The deliberately bad record: an order of a test no lab has (refused unknown_test).
BAD_TEST = "NO-SUCH-TEST"
# The services whose intake the generator sends to, and how often a patient is
# also referred up (assumed: a mix that gives the referral service work, not a
# clinical rate).
DRIVEN = ("lab", "referral")
REFERRAL_EVERY = 4


# --- clinics -------------------------------------------------------------------------


@dataclass(frozen=True)
class Clinic:
    """One terminal of one clinic: its id, its institution and its signing key."""

    terminal_id: str
    institution_id: str
    signer: TerminalSigner

    @classmethod
    def generate(cls, terminal_id: str, institution_id: str) -> Clinic:
        return cls(terminal_id, institution_id, TerminalSigner.generate(terminal_id))

    def registry_entry(self) -> dict[str, str]:
        return self.signer.registry_entry(self.institution_id)

    def private_pem(self) -> str:
        key: Ed25519PrivateKey = self.signer._key
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()


def lab_clinics() -> list[str]:
    """Township branches and village clinics that a lab centre serves (refdata)."""
    from yigongti_contracts import refdata

    data = refdata.load()
    found = []
    for kind in (refdata.Kind.township_branch, refdata.Kind.village_clinic):
        for inst in data.of_kind(kind):
            try:
                data.lab_centre_for(inst.id)
            except LookupError:
                continue
            found.append(inst.id)
    return found


def make_clinics(count: int, *, prefix: str | None = None,
                 institutions: Sequence[str] | None = None) -> list[Clinic]:
    """`count` new terminals, spread over the institutions (several per
    institution once there are more terminals than institutions)."""
    prefix = prefix or f"load-{secrets.token_hex(3)}"
    institutions = list(institutions or lab_clinics())
    return [Clinic.generate(f"{prefix}-{i + 1:03d}", institutions[i % len(institutions)])
            for i in range(count)]


def save_clinics(directory: Path, clinics: Sequence[Clinic]) -> Path:
    """Keys (`terminal_<id>.key`, 0600) and `terminals.yaml`, a TERMINALS_FILE
    fragment to add to a service's registry; returns the fragment's path."""
    directory.mkdir(parents=True, exist_ok=True)
    for clinic in clinics:
        path = directory / f"terminal_{clinic.terminal_id}.key"
        # Created readable by the owner only (never briefly world-readable).
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(clinic.private_pem())
    fragment = directory / "terminals.yaml"
    fragment.write_text(yaml.safe_dump({"terminals": [c.registry_entry() for c in clinics]},
                                       sort_keys=False))
    return fragment


def load_clinics(directory: Path) -> list[Clinic]:
    """The clinics `save_clinics` wrote; none when the directory has none."""
    fragment = directory / "terminals.yaml"
    if not fragment.exists():
        return []
    entries = (yaml.safe_load(fragment.read_text()) or {}).get("terminals") or []
    return [Clinic(e["terminal_id"], e["institution_id"], TerminalSigner(
                e["terminal_id"], (directory / f"terminal_{e['terminal_id']}.key").read_text()))
            for e in entries]


async def register(database_url: str, schema: str, clinics: Sequence[Clinic]) -> None:
    """Add the clinics' terminals to a service's registry (its schema), beside the
    ones it has: for a development or test stack whose database is at hand (in
    production terminals come through TERMINALS_FILE)."""
    from yigongti_kit.db import connect
    from yigongti_kit.intake_auth import parse_terminals, register_terminals

    entries = parse_terminals(yaml.safe_dump({"terminals": [c.registry_entry()
                                                             for c in clinics]}), "load")
    conn = await connect(database_url, schema)
    try:
        await register_terminals(conn, entries)
    finally:
        await conn.close()


# --- what a clinic sends ---------------------------------------------------------------


def service_of(event: StrictModel) -> str:
    """The service whose intake takes this kind of record."""
    for name, module in SERVICE_MODULES.items():
        if type(event) in module.INTAKE:
            return name
    raise ValueError(f"{type(event).__name__} is no service's intake")


@dataclass(frozen=True)
class Record:
    clinic: Clinic
    event: StrictModel

    @property
    def service(self) -> str:
        return service_of(self.event)

    def captured(self, seq: int) -> Queued:
        """As the terminal's queue captures it: ce_id fixed, value bytes as sent."""
        key = self.event.kafka_key()
        return Queued(seq=seq, ce_id=str(uuid.uuid4()), service=self.service,
                      ce_type=self.event.CE_TYPE, key=key, value=record_value(self.event),
                      aggregate=key, captured_at=datetime.now(UTC).isoformat(), attempts=0,
                      last_error=None)


def lab_journey(clinic: Clinic, index: int) -> list[StrictModel]:
    """A patient's order at `clinic`, its tubes collected, then dispatched together."""
    now = datetime.now(UTC)
    tube_set = TUBE_SETS[index % len(TUBE_SETS)]
    order = LabOrderPlaced(
        order_id=f"LO-{uuid.uuid4().hex[:16]}", visit_id=f"LV-{uuid.uuid4().hex[:12]}",
        patient_ref="v1:" + secrets.token_hex(32),
        sex=Sex.male if index % 2 else Sex.female,
        age=Age(value=20 + index % 60, unit=AgeUnit.years),
        ordering_institution=clinic.institution_id, ordering_clinician="load-doc-01",
        priority=PRIORITIES[index % len(PRIORITIES)],
        tests=tuple(OrderedTest(code=c) for _, codes in tube_set for c in codes),
        ordered_at=now)
    tubes = [SpecimenCollected(barcode=f"LB{uuid.uuid4().hex[:14].upper()}",
                               order_id=order.order_id, tests=codes, tube=tube,
                               collected_at=now, collector_id="load-nurse-01")
             for tube, codes in tube_set]
    dispatch = SpecimenDispatched(
        shipment_id=f"LS-{uuid.uuid4().hex[:16]}", barcodes=tuple(t.barcode for t in tubes),
        courier_id="load-courier-01", temperature_logger_id="load-logger-01",
        dispatched_at=now)
    return [order, *tubes, dispatch]


def bad_order(clinic: Clinic) -> LabOrderPlaced:
    """An order the lab refuses (unknown_test): the refusal path under load."""
    return LabOrderPlaced(
        order_id=f"LX-{uuid.uuid4().hex[:16]}", visit_id=f"LV-{uuid.uuid4().hex[:12]}",
        patient_ref="v1:" + secrets.token_hex(32), sex=Sex.female,
        age=Age(value=40, unit=AgeUnit.years), ordering_institution=clinic.institution_id,
        ordering_clinician="load-doc-01", priority=Priority.routine,
        tests=(OrderedTest(code=BAD_TEST),), ordered_at=datetime.now(UTC))


@cache
def _refer_to(institution_id: str) -> str:
    """Where a clinic refers a patient needing a chest-pain centre: the first
    candidate the referral rules give (refdata)."""
    from yigongti_contracts import refdata

    return refdata.load().upward_candidates(institution_id, "chest_pain_centre")[0].id


def referral_request(clinic: Clinic, patient_ref: str | None = None) -> StrictModel:
    """An emergency upward referral of a patient the clinic cannot treat (a STEMI
    without a chest-pain centre), to the hospital the rules put first."""
    referral = SERVICE_MODULES["referral"]
    return referral.ReferralRequested.model_validate(dict(
        referral_id=f"LR-{uuid.uuid4().hex[:16]}", direction="up",
        from_institution=clinic.institution_id, to_institution=_refer_to(clinic.institution_id),
        patient_ref=patient_ref or "v1:" + secrets.token_hex(32),
        reason="critical_beyond_capability", urgency="emergency",
        requested_by="load-doc-01", requested_at=datetime.now(UTC),
        required_capability="chest_pain_centre"))


def journey_for(services: Sequence[str]) -> Callable[[Clinic, int], list[StrictModel]]:
    """A patient's records for the driven services: the lab journey, and every
    REFERRAL_EVERY-th patient (every one without the lab) referred up."""
    unknown = set(services) - set(DRIVEN)
    if unknown or not services:
        raise ValueError(f"the generator drives {', '.join(DRIVEN)}; not {sorted(unknown)}")

    def journey(clinic: Clinic, index: int) -> list[StrictModel]:
        events = lab_journey(clinic, index) if "lab" in services else []
        if "referral" in services and (not events or index % REFERRAL_EVERY == 0):
            ref = events[0].patient_ref if events else None
            events.append(referral_request(clinic, ref))
        return events

    return journey


# --- pacing (pure) ---------------------------------------------------------------------


def planned(rate: float, seconds: float) -> int:
    """How many records an open loop at `rate` sends in `seconds`."""
    return max(0, math.floor(rate * seconds + 1e-9))


def spread(total: int, count: int) -> frozenset[int]:
    """`count` slots of `total`, evenly apart, never the first (bad records)."""
    count = min(count, max(0, total - 1))
    return frozenset((i + 1) * total // (count + 1) for i in range(count))


class Schedule:
    """Which clinic sends what in slot n, and when it is due (no I/O).

    Slot n belongs to clinic n mod K; a clinic's slots take its journey's
    records in order (a new journey when the last is used up). `bad` slots,
    spread over the run, carry a bad order instead."""

    def __init__(self, clinics: Sequence[Clinic], *, rate: float, seconds: float,
                 bad: int = 0, services: Sequence[str] = ("lab",),
                 journey: Callable[[Clinic, int], list[StrictModel]] | None = None) -> None:
        if not clinics:
            raise ValueError("at least one clinic")
        if rate <= 0:
            raise ValueError("the rate is records per second, above 0")
        if bad and "lab" not in services:
            raise ValueError("the bad records are lab orders: drive the lab too")
        self.clinics = list(clinics)
        self.rate = rate
        self.total = planned(rate, seconds)
        self.bad_slots = spread(self.total, bad)
        self.services = tuple(services)
        self._journey = journey or journey_for(self.services)
        self._pending: dict[str, deque[StrictModel]] = {c.terminal_id: deque()
                                                          for c in self.clinics}
        self._journeys = 0

    def due(self, n: int) -> float:
        """Seconds after the start that slot n is due."""
        return n / self.rate

    def record(self, n: int) -> Record:
        clinic = self.clinics[n % len(self.clinics)]
        if n in self.bad_slots:
            return Record(clinic, bad_order(clinic))
        pending = self._pending[clinic.terminal_id]
        if not pending:
            pending.extend(self._journey(clinic, self._journeys))
            self._journeys += 1
        return Record(clinic, pending.popleft())


# --- counting (pure) ---------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan if none."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Tally:
    """Sent, answered and refused records, matched to the events that answer them."""

    sent: int = 0
    answered: int = 0
    refused: Counter = field(default_factory=Counter)  # reason code -> records
    send_failed: Counter = field(default_factory=Counter)  # why the producer failed
    latencies: list[float] = field(default_factory=list)  # seconds, send -> answer
    # per service: Counter of "sent", "answered", "refused"
    by_service: dict[str, Counter] = field(default_factory=dict)
    _open: dict[str, tuple[float, str]] = field(default_factory=dict)  # ce_id -> (when, service)
    _by_answer: dict[tuple[str, str], str] = field(default_factory=dict)  # (type, value)

    @property
    def open(self) -> int:
        """Sent and not answered (yet)."""
        return len(self._open)

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())

    def expect(self, item: Queued, at: float) -> None:
        """`item` is handed to the producer at `at`: count it and learn its answer."""
        self.sent += 1
        self._open[item.ce_id] = (at, item.service)
        self.by_service.setdefault(item.service, Counter())["sent"] += 1
        types, name = ACCEPTED_BY.get(item.ce_type, ((), ""))
        if types:
            value = json.loads(item.value).get(name)
            for ce_type in types:
                self._by_answer[(ce_type, str(value))] = item.ce_id

    def failed(self, item: Queued, reason: str) -> None:
        """The producer did not take it: not sent after all."""
        if self._open.pop(item.ce_id, None) is not None:
            self.sent -= 1
            self.by_service[item.service]["sent"] -= 1
            self.send_failed[reason] += 1

    def seen(self, ce_type: str, data: dict[str, Any], at: float) -> str | None:
        """An event on a service's events topic at `at`: the ce_id of the sent
        record it answers, if any (counted once)."""
        if ce_type == REJECTED:
            ce_id = data.get("rejected_id")
            opened = self._open.pop(ce_id, None) if ce_id else None
            if opened is None:
                return None
            self.refused[str(data.get("reason") or "unknown")] += 1
            outcome = "refused"
        else:
            found = None
            for name in _ANSWER_FIELDS.get(ce_type, ()):
                value = data.get(name)
                if value is not None and (ce_type, str(value)) in self._by_answer:
                    found = self._by_answer.pop((ce_type, str(value)))
                    break
            if found is None:
                return None
            ce_id = found
            opened = self._open.pop(ce_id, None)
            if opened is None:  # refused first, or another answer type came already
                return None
            self.answered += 1
            outcome = "answered"
        started, service = opened
        self.by_service[service][outcome] += 1
        self.latencies.append(at - started)
        return ce_id

    def figures(self, seconds: float) -> dict[str, Any]:
        """What a run gives: counts, the achieved rate over `seconds` of sending,
        and p50/p99 from send to answer in milliseconds."""
        values = sorted(self.latencies)

        def ms(q: float) -> float:
            return round(percentile(values, q) * 1000, 1)

        return {
            "sent": self.sent, "answered": self.answered,
            "refused": self.refused_total, "refused_by_reason": dict(sorted(self.refused.items())),
            "lost": self.open, "send_failed": dict(self.send_failed),
            "by_service": {name: {k: counts[k] for k in ("sent", "answered", "refused")}
                           for name, counts in sorted(self.by_service.items())},
            "seconds": round(seconds, 2),
            "achieved_per_s": round(self.sent / seconds, 1) if seconds > 0 else 0.0,
            "p50_ms": ms(50), "p99_ms": ms(99),
            "max_ms": round(values[-1] * 1000, 1) if values else math.nan,
        }


# The field of each answering event that names what it answers (ACCEPTED_BY's).
_ANSWER_FIELDS: dict[str, tuple[str, ...]] = {}
for _types, _name in ACCEPTED_BY.values():
    for _type in _types:
        _ANSWER_FIELDS.setdefault(_type, ())
        if _name not in _ANSWER_FIELDS[_type]:
            _ANSWER_FIELDS[_type] += (_name,)


# --- the Kafka side ----------------------------------------------------------------


@dataclass(frozen=True)
class LoadTarget:
    """Where the clinics send: the broker as a terminal's configuration names it."""

    bootstrap: str
    broker_kind: str = "kafka"
    topic_prefix: str = ""
    route: dict[str, str] = field(default_factory=dict)
    send_timeout_s: float = 10.0

    @classmethod
    def from_config(cls, config: TerminalConfig) -> LoadTarget:
        return cls(config.kafka_bootstrap, config.kafka_broker_kind, config.topic_prefix,
                   dict(config.broker_route), config.send_timeout_s)


class AnswerWatcher:
    """Reads <service>.events.v1 from its end (every partition assigned, no
    consumer group: no join delay) and hands each event to the tally."""

    def __init__(self, target: LoadTarget, tally: Tally, services: Sequence[str]) -> None:
        self.target = target
        self.tally = tally
        self.topics = [topic_name(f"{s}.events.v1", target.topic_prefix) for s in services]
        self._consumer = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from yigongti_kit.settings import KitSettings, kafka_client_kwargs

        settings = KitSettings(service_name="terminal-load",
                               kafka_bootstrap_servers=self.target.bootstrap,
                               kafka_broker_kind=self.target.broker_kind)
        consumer = AIOKafkaConsumer(**{**kafka_client_kwargs(settings, "consumer"),
                                       "group_id": None})
        route_cluster(consumer._client.cluster, self.target.route)
        try:
            await asyncio.wait_for(consumer.start(), self.target.send_timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure to connect is "link down"
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise LinkDown(type(exc).__name__) from exc
        self._consumer = consumer
        tps = []
        for topic in self.topics:
            partitions = consumer.partitions_for_topic(topic)
            for _ in range(50):
                if partitions:
                    break
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic)
                await asyncio.sleep(0.1)
            if not partitions:
                raise RuntimeError(f"no topic {topic} on the broker")
            tps += [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:  # positions fixed now: every answer to what is sent later is read
            await consumer.position(tp)
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    ce_type = next((v.decode() for k, v in record.headers or ()
                                    if k == "ce_type"), "")
                    try:
                        data = json.loads(record.value)
                    except (TypeError, ValueError):
                        continue
                    if isinstance(data, dict):
                        self.tally.seen(ce_type, data, now)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()


class _Live:
    """The rich progress bar: records sent of those planned, and the live counts."""

    def __init__(self, console, total: int) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("sent [cyan]{task.fields[sent]}[/] · answered "
                       "[green]{task.fields[answered]}[/] · refused "
                       "[red]{task.fields[refused]}[/] · waiting {task.fields[open]}"),
            TimeElapsedColumn(), console=console, disable=console is None, transient=False)
        self.task = self.progress.add_task("sending", total=total, sent=0, answered=0,
                                           refused=0, open=0)

    def update(self, tally: Tally, phase: str | None = None) -> None:
        extra = {"description": phase} if phase else {}
        self.progress.update(self.task, completed=tally.sent + sum(tally.send_failed.values()),
                             sent=tally.sent, answered=tally.answered,
                             refused=tally.refused_total, open=tally.open, **extra)


async def drive(target: LoadTarget, clinics: Sequence[Clinic], *, rate: float,
                seconds: float, bad: int = 0, drain_s: float = 30.0, console=None,
                services: Sequence[str] = ("lab",)) -> dict[str, Any]:
    """Send the clinics' records open loop at `rate` for `seconds`, then wait up
    to `drain_s` for the last answers; returns the figures (Tally.figures, plus
    the run's settings; the achieved rate is per second of the sending phase:
    the slots' time, or longer when the broker took the last record later). `console`: a rich Console for the live progress bar
    (None: quiet). `bad`: deliberately refused records among them."""
    schedule = Schedule(clinics, rate=rate, seconds=seconds, bad=bad, services=services)
    tally = Tally()
    watcher = AnswerWatcher(target, tally, schedule.services)
    await watcher.start()
    live = _Live(console, schedule.total)
    sending: set[asyncio.Task] = set()

    async def send(sender: IntakeSender, record: Record, item: Queued) -> None:
        try:
            await sender.send(item, signer=record.clinic.signer)
        except LinkDown as exc:
            tally.failed(item, str(exc) or "link_down")

    async def refresh() -> None:
        while True:
            live.update(tally)
            await asyncio.sleep(0.1)

    try:
        async with IntakeSender(clinics[0].signer, target.bootstrap,
                                broker_kind=target.broker_kind,
                                topic_prefix=target.topic_prefix, route=target.route,
                                timeout_s=target.send_timeout_s) as sender:
            with live.progress:
                ticker = asyncio.create_task(refresh())
                try:
                    began = time.perf_counter()
                    for n in range(schedule.total):
                        delay = began + schedule.due(n) - time.perf_counter()
                        # Behind schedule: send at once (open loop), yet let the sends run.
                        await asyncio.sleep(max(0.0, delay))
                        record = schedule.record(n)
                        item = record.captured(n)
                        tally.expect(item, time.perf_counter())
                        task = asyncio.create_task(send(sender, record, item))
                        sending.add(task)
                        task.add_done_callback(sending.discard)
                    # On schedule, the last slot ends total/rate after the start; a
                    # producer that lags stretches it to when the broker took the last.
                    handed = time.perf_counter() - began + 1 / rate
                    if sending:
                        await asyncio.gather(*sending)
                    sent_for = max(handed, time.perf_counter() - began)
                    live.update(tally, "answers")
                    deadline = time.perf_counter() + drain_s
                    while tally.open and time.perf_counter() < deadline:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)  # the watcher's task fills the tally
                finally:
                    ticker.cancel()
                    await asyncio.gather(ticker, return_exceptions=True)
                    live.update(tally, "done")
    finally:
        await watcher.stop()
    return {"rate_target_per_s": rate, "clinics": len(clinics), "planned": schedule.total,
            "bad_planned": len(schedule.bad_slots), "services": list(schedule.services),
            **tally.figures(sent_for)}

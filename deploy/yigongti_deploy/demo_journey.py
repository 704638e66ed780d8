"""What every step of the demo shares: the places and people of the reference
scenario, the journey's event log (every service's events topic), its
timeline, the terminals that sign intake and the staff's HTTP clients.

The scenario plays in 昌吉市 (Changji reference data, refdata changji.yaml): a
township health centre without a chest-pain centre, whose ECGs the reference
data sends to a remote ECG centre, and the city's people's hospital, which it
names the county chest-pain centre, with the lab centre that serves both.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from opentelemetry import propagate, trace
from yigongti_contracts.refdata import load as load_refdata
from yigongti_kit.auth import issue_token
from yigongti_kit.settings import KitSettings, kafka_client_kwargs
from yigongti_kit.terminal import TerminalClient

from .stack import Stack

DEADLINE_S = 60.0

TOWNSHIP = "652301-B02"  # 大西渠镇卫生院: no chest-pain centre
COUNTY = "652301-H01"  # 昌吉市人民医院: the county chest-pain centre
LAB_CENTRE = "652301-L01"  # the county's lab centre, which serves the township
# The ECG centre that reads this township's ECGs: the reference data assigns it
# the prefecture-level hospital's remote ECG centre (the seed's own case).
ECG_CENTRE = "652300-E01"
COUNTY_TERMINAL = "referral-652301-H01"  # the county's terminal among the dev keys

# The people, by staff id (no names): who does what in the timeline.
NURSE = "STAFF-0107"
TOWNSHIP_DOCTOR = "STAFF-0101"
ECG_READER = "STAFF-2101"
TECHNOLOGIST = "652301-L01-TEC1"
LAB_PHYSICIAN = "652301-L01-PHY1"
COORDINATOR = "STAFF-4001"
CARDIOLOGIST = "STAFF-4101"

SERVICES = ("lab", "diagnosis", "referral", "settlement")


def place(institution: str) -> str:
    """An institution as the timeline names it: its name in the reference data."""
    try:
        return load_refdata().institution(institution).name
    except KeyError:
        return institution


def kafka_kwargs(stack: Stack, role: str) -> dict:
    settings = KitSettings(service_name="demo", kafka_bootstrap_servers=stack.bootstrap,
                           kafka_broker_kind=stack.broker_kind)
    return kafka_client_kwargs(settings, role)


class StepFailed(Exception):
    """A step did not reach its expected state."""


@dataclass
class Seen:
    ce_type: str
    body: dict
    trace_id: str  # of its traceparent header, "-" without one


class Events:
    """Every service's events topic, read from the beginning: the journey's
    events, and the intake rejections of what the demo sent."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.seen: list[Seen] = []
        self.sent: set[str] = set()  # ce_ids of the intake records the demo signed
        self._reader: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._reader = AIOKafkaConsumer(**{**kafka_kwargs(self.stack, "consumer"),
                                           "group_id": None})
        await self._reader.start()
        tps = []
        for service in SERVICES:
            topic = self.stack.topic(f"{service}.events.v1")
            partitions = self._reader.partitions_for_topic(topic)
            while not partitions:
                await self._reader._client.force_metadata_update()
                partitions = self._reader.partitions_for_topic(topic)
            tps += [TopicPartition(topic, p) for p in partitions]
        self._reader.assign(tps)
        await self._reader.seek_to_beginning(*tps)

    async def stop(self) -> None:
        if self._reader is not None:
            await self._reader.stop()

    def matching(self, suffix: str, **where) -> list[Seen]:
        return [s for s in self.seen if s.ce_type.endswith(suffix)
                and all(s.body.get(k) == v for k, v in where.items())]

    async def wait(self, suffix: str, count: int = 1, **where) -> list[dict]:
        """The bodies of `count` events of that type whose fields match `where`."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            found = self.matching(suffix, **where)
            if len(found) >= count:
                return [s.body for s in found]
            refused = [s.body for s in self.seen if s.ce_type.endswith("intake.rejected.v1")
                       and s.body.get("rejected_id") in self.sent]
            if refused:
                raise StepFailed(f"intake refused {refused[0].get('rejected_type', '')}: "
                                 f"{refused[0]['reason']}")
            if time.monotonic() > deadline:
                raise StepFailed(f"no {suffix} {where or ''} within {DEADLINE_S:.0f} s")
            assert self._reader is not None
            for records in (await self._reader.getmany(timeout_ms=50)).values():
                for r in records:
                    headers = dict(r.headers)
                    parent = headers.get("traceparent", b"").decode()
                    self.seen.append(Seen(headers["ce_type"].decode(), json.loads(r.value),
                                          parent.split("-")[1] if parent else "-"))

    async def one(self, suffix: str, **where) -> dict:
        return (await self.wait(suffix, **where))[0]

    async def read_by(self, service: str, owners: tuple[str, ...]) -> None:
        """Wait until `service` has read (committed its offsets past) everything
        on the events topics of `owners` so far: what it keeps from them is in
        its database. The offsets are looked up with the service's group id,
        by assignment, so the service's group is not joined."""
        assert self._reader is not None
        deadline = time.monotonic() + DEADLINE_S
        for owner in owners:
            topic = self.stack.topic(f"{owner}.events.v1")
            tps = [TopicPartition(topic, p) for p in self._reader.partitions_for_topic(topic)]
            ends = await self._reader.end_offsets(tps)
            looker = AIOKafkaConsumer(**{**kafka_kwargs(self.stack, "consumer"),
                                         "group_id": f"{service}.{owner}.events.v1",
                                         "enable_auto_commit": False})
            await looker.start()
            try:
                looker.assign(tps)
                for tp in tps:
                    while ends[tp] and (await looker.committed(tp) or 0) < ends[tp]:
                        if time.monotonic() > deadline:
                            raise StepFailed(f"{service} has not read {topic} within "
                                             f"{DEADLINE_S:.0f} s")
                        await asyncio.sleep(0.05)
            finally:
                await looker.stop()

    def type_of(self, suffix: str) -> str:
        """The full type of the last event seen with that suffix."""
        found = [s.ce_type for s in self.seen if s.ce_type.endswith(suffix)]
        return found[-1] if found else suffix


@dataclass
class Step:
    number: int
    title: str
    started: float = 0.0
    ms: float | None = None
    failed: str | None = None


@dataclass
class Timeline:
    """The journey as people read it: who did what, where, in plain words,
    with the event that shows it beside each line; the time of each step."""

    started: float = field(default_factory=time.monotonic)
    steps: list[Step] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def did(self, who: str, where: str, words: str, event: str) -> None:
        elapsed = (time.monotonic() - self.started) * 1000
        line = f"{elapsed:8.0f} ms  {who} · {place(where)}: {words}"
        pad = max(1, 100 - len(line))
        self.lines.append(f"{line}{' ' * pad}[{event}]")
        print(self.lines[-1], flush=True)

    def note(self, words: str) -> None:
        self.lines.append(f"{'':13}{words}")
        print(self.lines[-1], flush=True)


@dataclass
class WatchedTerminal:
    """A terminal whose signed records the event log watches for rejection."""

    client: TerminalClient
    sent: set[str]

    async def publish(self, record) -> str:
        ce_id = await self.client.publish(record)
        self.sent.add(ce_id)
        return ce_id


@dataclass
class Journey:
    """One run of the reference scenario: the stack, what the steps found out
    (ids, times), and the means to act."""

    stack: Stack
    events: Events
    timeline: Timeline
    producer: AIOKafkaProducer | None = None
    facts: dict = field(default_factory=dict)  # what later steps and the measures read

    @property
    def keys(self):
        assert self.stack.keys is not None
        return self.stack.keys

    def terminal(self, service: str, *, county: bool = False) -> WatchedTerminal:
        """The township's terminal (the dev terminal) or the county's, on a
        service's intake topic; what it signs is watched for rejection."""
        assert self.producer is not None
        signer = self.keys.referral_signer(COUNTY_TERMINAL) if county else self.keys.signer()
        return WatchedTerminal(
            TerminalClient(signer, self.producer, self.stack.topic(f"{service}.intake.v1")),
            self.events.sent)

    def http(self, service: str, user: str, institution: str, roles: list[str]
             ) -> httpx.AsyncClient:
        """A member of staff's HTTP client; its calls continue the journey's trace."""
        token = issue_token(self.keys.auth_private_pem, user=user, institution=institution,
                            roles=roles, audience=service)
        url = self.stack.face_sandbox_url if service == "face" else \
            self.stack.services[service].url
        return httpx.AsyncClient(base_url=url, timeout=60,
                                 headers={"Authorization": f"Bearer {token}"},
                                 event_hooks={"request": [carry_trace]})

    def did(self, who: str, where: str, words: str, suffix: str) -> None:
        """A timeline line, beside it the event (by its type's end) that shows it."""
        self.timeline.did(who, where, words, self.events.type_of(suffix))

    @asynccontextmanager
    async def step(self, number: int, title: str):
        """A step of the scenario: a span of its own in the journey's trace,
        timed; an exception names the step."""
        s = Step(number, title, time.monotonic())
        self.timeline.steps.append(s)
        print(f"\n— step {number}: {title}", flush=True)
        with trace.get_tracer("yigongti.demo").start_as_current_span(f"step {number}: {title}"):
            try:
                yield s
            except Exception as exc:
                s.failed = str(exc) or repr(exc)
                raise StepFailed(f"step {number} ({title}): {s.failed}") from exc
            finally:
                s.ms = (time.monotonic() - s.started) * 1000


async def carry_trace(request: httpx.Request) -> None:
    """The staff's HTTP calls continue the journey's trace (W3C traceparent)."""
    propagate.inject(request.headers)


def ok(answer: httpx.Response, what: str) -> dict:
    """The answer's body, or the step fails saying what was refused and why."""
    if answer.status_code >= 300:
        raise StepFailed(f"{what}: HTTP {answer.status_code} {answer.text[:200]}")
    return answer.json() if answer.content else {}

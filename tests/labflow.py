"""Test support for the lab service: build intake records, run the service in
this process, watch its events topic."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from yigongti_contracts.common import Age, AgeUnit, Sex
from yigongti_contracts.envelope import Envelope, to_headers
from yigongti_contracts.lab.codes import Priority, TubeType
from yigongti_contracts.lab.parts import OrderedTest
from yigongti_contracts.lab.v1 import LabOrderPlaced, SpecimenCollected
from yigongti_contracts.patient_ref import check_character, patient_ref
from yigongti_kit.terminal import IntakeRecord, TerminalClient, build_record

# The lab tests' patients get their refs as a terminal would from settlement's
# look-up: the HMAC of a synthetic ID number under a dev key that this fixture
# alone holds (never a production key; the ID numbers are made up, check digit
# computed per GB 11643-1999).
DEV_REF_KEY = bytes.fromhex("5e" * 32)


def synthetic_patient(n: int) -> str:
    """The ref of the n-th synthetic patient of Qitai (652325), born in the 1940s
    (a distinct ID number for each n below 3,650,000)."""
    born = date(1940, 1, 1) + timedelta(days=(n // 1000) % 3650)
    first17 = f"652325{born:%Y%m%d}{n % 1000:03d}"
    return patient_ref(first17 + check_character(first17), DEV_REF_KEY)


_patients = itertools.count(random.randrange(1_000_000))


def new_patient() -> str:
    """Another synthetic patient's ref, new in this test process."""
    return synthetic_patient(next(_patients))


PATIENT = synthetic_patient(1)


def order(institution: str, *, order_id: str | None = None, tests=("K", "CTNI"),
          **overrides) -> LabOrderPlaced:
    fields = dict(
        order_id=order_id or f"O-{uuid.uuid4().hex[:12]}",
        visit_id=f"V-{uuid.uuid4().hex[:8]}",
        patient_ref=PATIENT,
        sex=Sex.male,
        age=Age(value=80, unit=AgeUnit.years),
        ordering_institution=institution,
        ordering_clinician="doc-17",
        priority=Priority.stat,
        tests=tuple(OrderedTest(code=c) for c in tests),
        ordered_at=datetime.now(UTC),
    )
    fields.update(overrides)
    return LabOrderPlaced(**fields)


def collected(o: LabOrderPlaced, *, barcode: str | None = None, tests=("K", "CTNI"),
              tube=TubeType.serum_gold) -> SpecimenCollected:
    return SpecimenCollected(
        barcode=barcode or f"B{uuid.uuid4().hex[:10]}",
        order_id=o.order_id,
        tests=tests,
        tube=tube,
        collected_at=datetime.now(UTC),
        collector_id="nurse-3",
    )


@dataclass
class EventLog:
    """Every record on a topic since the test began, read without a consumer
    group (manual assignment), so there is no join delay."""

    records: list = field(default_factory=list)
    _task: asyncio.Task | None = None
    _consumer: AIOKafkaConsumer | None = None

    async def start(self, kwargs: dict, topic: str) -> None:
        kwargs = {**kwargs, "group_id": None, "enable_auto_commit": False}
        self._consumer = AIOKafkaConsumer(**kwargs)
        await self._consumer.start()
        partitions = None
        while not partitions:
            await self._consumer._client.force_metadata_update()
            partitions = self._consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in partitions]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=50)
            for records in batches.values():
                self.records.extend(records)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        if self._consumer:
            await self._consumer.stop()

    def of_type(self, ce_type_suffix: str) -> list:
        return [r for r in self.records if ce_type(r).endswith(ce_type_suffix)]

    async def wait_for(self, predicate, timeout: float = 20.0,  # noqa: ASYNC109
                       count: int = 1) -> list:
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.records if predicate(r)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                types = [ce_type(r) for r in self.records]
                raise TimeoutError(f"{len(found)}/{count} matching; seen {types}")
            await asyncio.sleep(0.02)


def header(record, name: str) -> str | None:
    for k, v in record.headers or ():
        if k == name:
            return v.decode() if v is not None else None
    return None


def ce_type(record) -> str:
    return header(record, "ce_type") or ""


def payload(record) -> dict:
    return json.loads(record.value)


def rejection_for(ce_id: str):
    """Predicate: the IntakeRejected answering the record `ce_id`."""
    return lambda r: ce_type(r).endswith("intake.rejected.v1") and \
        payload(r).get("rejected_id") == ce_id


class Terminal:
    """A clinic terminal: signs and publishes intake, or sends raw records."""

    def __init__(self, signer, producer: AIOKafkaProducer, topic: str) -> None:
        self.signer = signer
        self.producer = producer
        self.topic = topic
        self.client = TerminalClient(signer, producer, topic)

    async def publish(self, event, **kwargs) -> str:
        return await self.client.publish(event, **kwargs)

    def record(self, event, **kwargs):
        return build_record(self.signer, event, **kwargs)

    async def send_raw(self, key: bytes | None, value: bytes | None, headers, **kw):
        """Publish exactly these bytes and headers; returns the RecordMetadata."""
        return await self.producer.send_and_wait(self.topic, key=key, value=value,
                                                 headers=headers, **kw)


def signed_raw(signer, ce_type: str, value: bytes, *, key: str | None = "K-raw",
               ce_id: str | None = None, time: datetime | None = None,
               nonce: str | None = None) -> IntakeRecord:
    """A record with a valid envelope and a valid signature over any `value`
    bytes and any `ce_type` (for records the service must refuse after decoding)."""
    ce_id = ce_id or str(uuid.uuid4())
    envelope = Envelope(id=ce_id, source=signer.source, type=ce_type,
                        time=time or datetime.now(UTC), subject=key)
    headers = signer.sign(to_headers(envelope), value, nonce=nonce)
    return IntakeRecord(key.encode() if key is not None else None, value, headers, ce_id)


def partition_of(key: bytes | str) -> int:
    """The intake partition every producer puts `key` on (murmur2, as aiokafka
    and Java clients do): a record sent there with its own key lands behind
    the records of `key`."""
    from aiokafka.partitioner import DefaultPartitioner
    from yigongti_contracts.topics import PARTITIONS

    partitions = list(range(PARTITIONS["intake"]))
    return DefaultPartitioner()(key.encode() if isinstance(key, str) else key,
                                partitions, partitions)


def without(headers, *names: str) -> list:
    """The headers minus every one named."""
    return [(k, v) for k, v in headers if k not in names]

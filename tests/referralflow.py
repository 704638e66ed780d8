"""The referral service running in the test's process on the real broker and
database, module-scoped (one service for a test module): terminals of a
township and of the county, HTTP clients by institution, publishers of the
diagnosis and lab services' events, and a log of referral's events."""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import harness
import httpx
import yaml
from aiokafka import AIOKafkaProducer
from labflow import EventLog, ce_type, payload
from yigongti_contracts.envelope import Envelope, to_headers
from yigongti_contracts.refdata import Capability
from yigongti_contracts.referral import v1
from yigongti_contracts.referral.codes import (
    Decision,
    Direction,
    DownwardReason,
    UpwardReason,
    Urgency,
)
from yigongti_deploy.embedded import create_topics, free_port
from yigongti_kit import db, timers
from yigongti_kit.auth import issue_token
from yigongti_kit.intake_auth import TerminalSigner
from yigongti_kit.service import ServiceRuntime
from yigongti_kit.terminal import TerminalClient
from yigongti_referral.app import spec

TOWNSHIP = "652301-B02"  # 大西渠镇卫生院: no chest-pain centre
COUNTY = "652301-H01"  # 昌吉市人民医院总医院: the county chest-pain centre
PREFECTURE = "652300-P01"
OTHER_COUNTY = "652323-H01"  # 呼图壁县总医院
DAFENG = "652323-B01"  # a township under 652323-H01


def new_patient() -> str:
    return "v1:" + uuid.uuid4().hex + uuid.uuid4().hex


def new_id(prefix: str = "REF") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def now() -> datetime:
    return datetime.now(UTC)


def up(referral_id: str | None = None, *, frm: str = TOWNSHIP, to: str = COUNTY,
       urgency: Urgency = Urgency.emergency, patient: str | None = None,
       capability: Capability | None = Capability.chest_pain_centre,
       **kw) -> v1.ReferralRequested:
    return v1.ReferralRequested(
        referral_id=referral_id or new_id(), direction=Direction.up, from_institution=frm,
        to_institution=to, patient_ref=patient or new_patient(),
        reason=UpwardReason.critical_beyond_capability, urgency=urgency,
        requested_by="doc-t1", requested_at=now(), required_capability=capability, **kw)


def down(referral_id: str | None = None, *, frm: str = COUNTY, to: str = TOWNSHIP,
         **kw) -> v1.ReferralRequested:
    fields = dict(
        referral_id=referral_id or new_id(), direction=Direction.down, from_institution=frm,
        to_institution=to, patient_ref=new_patient(),
        reason=DownwardReason.stable_rehabilitation, urgency=Urgency.routine,
        requested_by="doc-c1", requested_at=now(),
        care_plan=v1.CarePlan(diagnoses=("I21.0",), medications=("XC10AAA",),
                              warning_signs=("chest_pain",)),
        handed_over_by="doc-c1")
    fields.update(kw)
    return v1.ReferralRequested(**fields)


def accept(referral_id: str) -> v1.ReferralDecision:
    return v1.ReferralDecision(referral_id=referral_id, decision=Decision.accept,
                               decided_by="coord-1", decided_at=now())


def of(referral_id: str, suffix: str):
    """Predicate: a referral event of that type about that referral."""
    return lambda r: ce_type(r).endswith(suffix) and payload(r).get("referral_id") == referral_id


def refused(ce_id: str):
    return lambda r: ce_type(r).endswith("intake.rejected.v1") and \
        payload(r).get("rejected_id") == ce_id


@dataclass
class Upstream:
    """Publishes on another service's events topic as that service would."""

    producer: AIOKafkaProducer
    topic: str
    source: str

    async def publish(self, event) -> str:
        ce_id = str(uuid.uuid4())
        key = event.kafka_key()
        envelope = Envelope(id=ce_id, source=self.source, type=event.CE_TYPE, time=now(),
                            subject=key, aggseq=1)
        await self.producer.send_and_wait(self.topic, key=key.encode(),
                                          headers=to_headers(envelope),
                                          value=event.model_dump_json().encode())
        return ce_id


@dataclass
class ReferralUnderTest:
    runtime: ServiceRuntime
    events: EventLog
    terminals: dict[str, TerminalClient]  # by institution
    diagnosis: Upstream
    lab: Upstream
    auth_key: str
    topics: dict[str, str]
    settings: object = None
    named_signers: dict | None = None  # terminal id → signer (named_terminals)
    producer: AIOKafkaProducer | None = None

    async def restart(self, between=None) -> None:
        """Stop the service, run `between()` while it is down, start it again."""
        await self.runtime.stop()
        if between is not None:
            await between()
        self.runtime = ServiceRuntime(spec(), self.settings)
        await self.runtime.start()
        for reader in self.runtime.subscription_consumers.values():
            await asyncio.wait_for(reader.assigned.wait(), 30)

    @property
    def pool(self) -> asyncpg.Pool:
        return self.runtime.pool

    def http(self, institution: str, roles=("referral_coordinator",),
             user: str = "coord-1") -> httpx.AsyncClient:
        token = issue_token(self.auth_key, user=user, institution=institution,
                            roles=list(roles), audience="referral")
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.runtime.app),
                                 base_url="http://referral",
                                 headers={"Authorization": f"Bearer {token}"})

    async def send(self, institution: str, record) -> str:
        return await self.terminals[institution].publish(record)

    async def wait(self, predicate, timeout: float = 20.0, count: int = 1) -> list:  # noqa: ASYNC109
        return await self.events.wait_for(predicate, timeout=timeout, count=count)

    async def shift_clock(self, by: timedelta) -> None:
        """Move the database clock forward (works while the service is down too)."""
        conn = await db.connect(self.settings.database_url, self.settings.db_schema)
        try:
            await timers.shift_clock(conn, by)
        finally:
            await conn.close()


def _write_terminals(dev_keys, entries: list, directory: Path) -> Path:
    """The dev terminals and the tests' own."""
    registry = yaml.safe_load(Path(dev_keys.terminals_file).read_text())
    registry["terminals"] += entries
    path = directory / "terminals.yaml"
    path.write_text(yaml.safe_dump(registry))
    return path


async def start_referral(*, database_url: str, kafka_bootstrap: str, broker_kind: str,
                         dev_keys, directory: Path, named_terminals: dict[str, str] | None = None):
    """Start the service in a schema and under a topic prefix of its own;
    `named_terminals` (terminal id → institution) registers terminals by those ids."""
    from yigongti_kit.settings import KitSettings

    schema = harness.unique("s")
    conn = await asyncpg.connect(database_url)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    prefix = harness.unique("t") + "_"
    from yigongti_contracts.topics import topic_name, topics_for
    names, wanted = {}, []
    for service in ("referral", "diagnosis", "lab"):
        for t in topics_for(service):
            names[t.name] = topic_name(t.name, prefix)
            wanted.append((names[t.name], t.partitions))
    await create_topics(kafka_bootstrap, wanted)

    signers = {inst: TerminalSigner.generate(f"t-{inst}-{uuid.uuid4().hex[:6]}")
               for inst in (TOWNSHIP, COUNTY, PREFECTURE, OTHER_COUNTY, DAFENG)}
    named = {tid: TerminalSigner.generate(tid) for tid in (named_terminals or {})}
    terminals_file = _write_terminals(dev_keys, [
        s.registry_entry(inst) for inst, s in signers.items()] + [
        s.registry_entry((named_terminals or {})[t]) for t, s in named.items()], directory)

    env = {"DATABASE_URL": database_url, "DB_SCHEMA": schema,
           "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_BROKER_KIND": broker_kind,
           "TOPIC_PREFIX": prefix, "CONSUMER_GROUP": harness.unique("g") + "_referral",
           "HTTP_HOST": "127.0.0.1", "AUTH_PUBLIC_KEY": dev_keys.auth_public_pem,
           "TERMINALS_FILE": str(terminals_file), "SERVICE_NAME": "referral",
           "HTTP_PORT": str(free_port()), "METRICS_PORT": "0"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        settings = KitSettings()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    runtime = ServiceRuntime(spec(), settings)
    await runtime.start()
    for reader in runtime.subscription_consumers.values():
        await asyncio.wait_for(reader.assigned.wait(), 30)
    producer = AIOKafkaProducer(**harness.client_kwargs(kafka_bootstrap, "producer", broker_kind))
    await producer.start()
    events = EventLog()
    await events.start(harness.client_kwargs(kafka_bootstrap, "consumer", broker_kind),
                       names["referral.events.v1"])
    under_test = ReferralUnderTest(
        runtime=runtime, events=events,
        terminals={inst: TerminalClient(s, producer, names["referral.intake.v1"])
                   for inst, s in signers.items()},
        diagnosis=Upstream(producer, names["diagnosis.events.v1"], "/yigongti/diagnosis"),
        lab=Upstream(producer, names["lab.events.v1"], "/yigongti/lab"),
        auth_key=dev_keys.auth_private_pem, topics=names, settings=settings,
        named_signers=named, producer=producer)

    async def stop() -> None:
        await events.stop()
        await producer.stop()
        await under_test.runtime.stop()
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    return under_test, stop

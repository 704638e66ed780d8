"""Test support for the diagnosis service: the service in this process on the
real broker, PostgreSQL and Orthanc (one per test module), requests, tokens,
uploads and waits."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import harness
import httpx
from aiokafka import AIOKafkaProducer
from labflow import EventLog, Terminal, ce_type, payload
from yigongti_contracts.common import Age, AgeUnit, Sex
from yigongti_contracts.diagnosis.codes import Modality
from yigongti_contracts.diagnosis.v1 import DiagnosisRequested
from yigongti_contracts.topics import topic_name, topics_for
from yigongti_deploy.embedded import create_topics, free_port
from yigongti_kit.auth import issue_token
from yigongti_kit.service import ServiceRuntime

CLINIC = "652325-B01"  # the dev terminal's institution (devkeys)
OTHER_CLINIC = "652325-B02"
ECG_CENTRE = "652325-E01"
IMAGING_CENTRE = "652325-I01"
PATIENT = "v1:" + "cd" * 32


def waveform_ecg() -> bytes:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("waveform_ecg.dcm")).read_bytes()


_SAMPLE = []


def _parsed_sample():
    from yigongti_diagnosis import recording

    if not _SAMPLE:
        _SAMPLE.append(recording.parse(waveform_ecg(), recording.MEDIA_DICOM))
    return _SAMPLE[0]


PRIORITY = {
    "routine": {"indications": ("Z00.0",)},
    "urgent": {"indications": ("R55",)},
    "stat": {"indications": ("I63.9",)},
}


def ecg_request(recording_ref: str, *, request_id: str | None = None, **overrides
                ) -> DiagnosisRequested:
    now = datetime.now(UTC)
    fields = dict(
        request_id=request_id or f"DX-{uuid.uuid4().hex[:12]}", visit_id="VIS-1",
        patient_ref=PATIENT, sex=Sex.male, age=Age(value=80, unit=AgeUnit.years),
        modality=Modality.ECG, recording_ref=recording_ref, indications=("Z00.0",),
        requesting_institution=CLINIC, requesting_clinician="STAFF-0107", requested_at=now)
    fields.update(overrides)
    return DiagnosisRequested(**fields)


def imaging_request(modality: str, study_uid: str, accession: str, **overrides
                    ) -> DiagnosisRequested:
    fields = dict(
        request_id=f"DX-{uuid.uuid4().hex[:12]}", visit_id="VIS-2", patient_ref=PATIENT,
        sex=Sex.female, age=Age(value=54, unit=AgeUnit.years), modality=Modality(modality),
        study_instance_uid=study_uid, accession_number=accession, indications=("R51",),
        requesting_institution=CLINIC, requesting_clinician="STAFF-0107",
        requested_at=datetime.now(UTC))
    fields.update(overrides)
    return DiagnosisRequested(**fields)


@dataclass
class Dx:
    runtime: ServiceRuntime
    terminal: Terminal
    events: EventLog
    dev_keys: object
    settings: object
    env: dict | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        return self.runtime.pool

    def client(self, institution: str, roles, user: str = "u-1",
               app=None) -> httpx.AsyncClient:
        token = issue_token(self.dev_keys.auth_private_pem, user=user, institution=institution,
                            roles=list(roles), audience="diagnosis")
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app or self.runtime.app), base_url="http://dx",
            headers={"Authorization": f"Bearer {token}"}, timeout=120)

    def terminal_http(self, institution: str = CLINIC) -> httpx.AsyncClient:
        return self.client(institution, ["clinic_terminal"], user="TERM-1")

    def reader(self, user: str = "STAFF-2001", centre: str = ECG_CENTRE,
               reads=("ecg",)) -> httpx.AsyncClient:
        return self.client(centre, ["diagnostician", *(f"reads_{m}" for m in reads)], user=user)

    async def upload(self, data: bytes | None = None, media_type: str = "application/dicom",
                     institution: str = CLINIC) -> dict:
        async with self.terminal_http(institution) as http:
            answer = await http.post("/recordings", content=data or waveform_ecg(),
                                     headers={"Content-Type": media_type})
        assert answer.status_code == 201, answer.text
        return answer.json()

    async def stored_recording(self, institution: str = CLINIC,
                               measurements: dict | None = None) -> str:
        """A recording stored as an upload stores it, without the worker's
        measurement (fast set-up for worklist tests; uploads are tested apart)."""
        from yigongti_diagnosis import recording, store

        parsed = _parsed_sample()
        async with self.pool.acquire() as conn:
            return await store.store_recording(
                conn, institution=institution, user="TERM-1", data=parsed.to_bytes(),
                metadata=parsed.metadata(), duration_s=parsed.duration_s,
                measurements=measurements, measure_error=None)
        del recording

    async def queued(self, *, priority_hint: str = "routine", **overrides) -> dict:
        """An ECG request queued on the ECG centre's worklist; its DiagnosisQueued."""
        req = ecg_request(await self.stored_recording(), **{**PRIORITY[priority_hint], **overrides})
        await self.terminal.publish(req)
        (queued,) = await self.wait("diagnosis.queued.v1", req.request_id)
        return queued

    async def wait(self, suffix: str, request_id: str, count: int = 1,
                   timeout: float = 20.0) -> list[dict]:  # noqa: ASYNC109
        found = await self.events.wait_for(
            lambda r: ce_type(r).endswith(suffix) and (
                payload(r).get("request_id") == request_id
                or payload(r).get("key") == request_id), count=count, timeout=timeout)
        return [payload(r) for r in found]

    async def fetchval(self, sql: str, *args):
        async with self.pool.acquire() as conn:
            return await conn.fetchval(sql, *args)

    async def fetch(self, sql: str, *args):
        async with self.pool.acquire() as conn:
            return await conn.fetch(sql, *args)

    async def shift_clock(self, by: timedelta) -> None:
        from yigongti_kit.timers import shift_clock

        async with self.pool.acquire() as conn:
            await shift_clock(conn, by)

    async def restart(self) -> None:
        """Stop the service and start it again on the same database and topics."""
        await self.runtime.stop()
        from yigongti_diagnosis.app import spec

        self.runtime = ServiceRuntime(spec(), settings_from(dict(
            self.env, HTTP_PORT=str(free_port()))))
        await self.runtime.start()

    async def settled(self) -> None:
        await until(lambda: self.fetchval("SELECT count(*) = 0 FROM outbox"
                                          " WHERE sent_at IS NULL AND refused_at IS NULL"),
                    what="every event published")


async def until(check, timeout: float = 20.0, what: str = "condition") -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, f"{what} not reached"
        await asyncio.sleep(0.05)


def service_env(database_url: str, schema: str, kafka_bootstrap: str, broker_kind: str,
                prefix: str, dev_keys, **overrides) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url, "DB_SCHEMA": schema,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_BROKER_KIND": broker_kind,
        "TOPIC_PREFIX": prefix, "CONSUMER_GROUP": harness.unique("g") + "_diagnosis",
        "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(free_port()), "METRICS_PORT": "0",
        "AUTH_PUBLIC_KEY": dev_keys.auth_public_pem,
        "TERMINALS_FILE": str(dev_keys.terminals_file), "SERVICE_NAME": "diagnosis",
    }
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def settings_from(env: dict[str, str]):
    from yigongti_kit.settings import KitSettings

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return KitSettings()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def start_dx(database_url, kafka_bootstrap, broker_kind, dev_keys, *,
                   pacs_url: str | None = None):
    """(Dx, env, cleanup): the service on a fresh schema and topic prefix."""
    from yigongti_diagnosis import imaging
    from yigongti_diagnosis.app import spec

    schema = harness.unique("s")
    conn = await asyncpg.connect(database_url)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    prefix = harness.unique("t") + "_"
    await create_topics(kafka_bootstrap, [(topic_name(t.name, prefix), t.partitions)
                                          for t in topics_for("diagnosis")])
    if pacs_url:
        os.environ["PACS_DICOMWEB_URL"] = pacs_url
    imaging._client.cache_clear()
    env = service_env(database_url, schema, kafka_bootstrap, broker_kind, prefix, dev_keys)
    settings = settings_from(env)
    runtime = ServiceRuntime(spec(), settings)
    await runtime.start()
    producer = AIOKafkaProducer(**harness.client_kwargs(kafka_bootstrap, "producer",
                                                        broker_kind))
    await producer.start()
    events = EventLog()
    kwargs = harness.client_kwargs(kafka_bootstrap, "consumer", broker_kind)
    await events.start(kwargs, topic_name("diagnosis.events.v1", prefix))
    terminal = Terminal(dev_keys.signer(), producer,
                        topic_name("diagnosis.intake.v1", prefix))
    dx = Dx(runtime, terminal, events, dev_keys, settings, env)

    async def cleanup() -> None:
        await events.stop()
        await producer.stop()
        await dx.runtime.stop()
        conn = await asyncpg.connect(database_url)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()

    return dx, env, cleanup

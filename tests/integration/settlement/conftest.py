"""The settlement service in the test's process, one per test module, on the
real broker and database, with the face platform's sandbox in-process, a lab
that posts charges, a terminal for intake and a log of every topic."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import harness
import httpx
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from labflow import EventLog, Terminal
from settlementflow import COUNTER_H01, HOSPITAL, REVOKED
from yigongti_contracts.topics import topic_name, topics_for
from yigongti_deploy.embedded import create_topics, free_port
from yigongti_deploy.face_sandbox import FaceSandbox
from yigongti_kit.auth import issue_token
from yigongti_kit.service import ServiceRuntime
from yigongti_kit.settings import KitSettings
from yigongti_settlement import config
from yigongti_settlement.app import spec


@dataclass
class SettlementUnderTest:
    runtime: ServiceRuntime
    sandbox: FaceSandbox
    terminal: Terminal
    producer: AIOKafkaProducer
    logs: dict[str, EventLog]
    topics: dict[str, str]
    dev_keys: object
    secrets_used: list[str] = field(default_factory=list)  # scanned for at the end

    @property
    def pool(self) -> asyncpg.Pool:
        return self.runtime.pool

    @property
    def events(self) -> EventLog:
        return self.logs["settlement.events.v1"]

    def client(self, *, roles=("settlement_terminal",), user: str | None = None,
               institution: str | None = None) -> httpx.AsyncClient:
        institution = institution or self.dev_keys.institution_id
        user = user or self.dev_keys.terminal_id
        token = issue_token(self.dev_keys.auth_private_pem, user=user, institution=institution,
                            roles=list(roles), audience="settlement")
        self.secrets_used.append(token)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.runtime.app),
                                 base_url="http://settlement",
                                 headers={"Authorization": f"Bearer {token}"})

    def office(self) -> httpx.AsyncClient:
        return self.client(roles=("insurance_office",), user="auditor-1")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record) + repr(record.args))
        except Exception:  # noqa: BLE001 - a log line that cannot format is still scanned
            self.lines.append(str(record.msg))


def needles(secrets_used: list[str]) -> set[str]:
    """Each secret, and an ID number's other spellings (lower-case x, 15 digits)."""
    out = set()
    for secret in secrets_used:
        out.add(secret)
        if len(secret) == 18 and secret[:17].isdigit():
            out.add(secret.lower())
            if secret[6:8] == "19":
                out.add(secret[:6] + secret[8:17])
    return out


def leaked(st, log_lines: list[str]) -> list[tuple[str, str]]:
    found = []
    wanted = needles(st.secrets_used)
    for name, log in st.logs.items():
        for record in log.records:
            blob = (record.value or b"") + b"".join(v or b"" for _, v in record.headers or ())
            text = blob.decode("utf-8", "replace")
            found += [(name, n[:4]) for n in wanted if n in text]
    text = "\n".join(log_lines)
    found += [("log", n[:4]) for n in wanted if n in text]
    return found


def write_keys(directory: Path, sandbox: FaceSandbox) -> config.SettlementSettings:
    directory.mkdir(parents=True, exist_ok=True)
    refs = directory / "patient-ref-keys.yaml"
    refs.write_text(f"current: v1\nkeys:\n  v1: {secrets.token_hex(32)}\n")
    nid = directory / "national-id.key"
    nid.write_text(secrets.token_hex(32))
    issuers = directory / "issuers.yaml"
    issuers.write_text(sandbox.issuer_file())
    return config.SettlementSettings(
        patient_ref_keys_file=str(refs), national_id_key_file=str(nid),
        face_issuer_keys_file=str(issuers), lookup_limit_per_minute=50)


def kit_settings(env: dict[str, str]) -> KitSettings:
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


@pytest_asyncio.fixture(scope="module")
async def settlement(database_url, kafka_bootstrap, broker_kind, dev_keys, tmp_path_factory):
    sandbox = FaceSandbox()
    settings = write_keys(tmp_path_factory.mktemp("settlement-keys"), sandbox)
    config.configure(settings)
    schema = harness.unique("s")
    prefix = harness.unique("t") + "_"
    conn = await asyncpg.connect(database_url)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    names, wanted = {}, []
    for service in ("settlement", "lab", "diagnosis"):
        for topic in topics_for(service):
            names[topic.name] = topic_name(topic.name, prefix)
            wanted.append((names[topic.name], topic.partitions))
    await create_topics(kafka_bootstrap, wanted)
    runtime = ServiceRuntime(spec(), kit_settings({
        "DATABASE_URL": database_url, "DB_SCHEMA": schema,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_BROKER_KIND": broker_kind,
        "TOPIC_PREFIX": prefix, "CONSUMER_GROUP": harness.unique("g"),
        "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(free_port()), "METRICS_PORT": "0",
        "SERVICE_NAME": "settlement", "AUTH_PUBLIC_KEY": dev_keys.auth_public_pem,
        "TERMINALS_FILE": str(dev_keys.terminals_file)}))
    await runtime.start()
    async with runtime.pool.acquire() as c:
        # Two more counters: one of the county hospital, one revoked.
        await c.execute(
            """INSERT INTO terminals (terminal_id, institution_id, public_key, active)
               VALUES ($1, $2, 'unused', true), ($3, $4, 'unused', false)""",
            COUNTER_H01, HOSPITAL, REVOKED, dev_keys.institution_id)
    producer = AIOKafkaProducer(**harness.client_kwargs(kafka_bootstrap, "producer", broker_kind))
    await producer.start()
    consumer_kwargs = harness.client_kwargs(kafka_bootstrap, "consumer", broker_kind)
    logs = {}
    for name, physical in names.items():
        logs[name] = EventLog()
        await logs[name].start(consumer_kwargs, physical)
    terminal = Terminal(dev_keys.signer(), producer, names["settlement.intake.v1"])
    under_test = SettlementUnderTest(runtime, sandbox, terminal, producer, logs, names, dev_keys)
    captured = _Capture()
    logging.getLogger().addHandler(captured)
    try:
        yield under_test
        # Every module: no secret a test used on any topic or in any log line.
        leaks = leaked(under_test, captured.lines)
        assert not leaks, leaks[:3]
    finally:
        logging.getLogger().removeHandler(captured)
        for log in logs.values():
            await log.stop()
        await producer.stop()
        await runtime.stop()
        conn = await asyncpg.connect(database_url)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()

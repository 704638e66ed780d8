"""The stack and the service-process harness, with a stand-in service (a tiny HTTP
server that answers /readyz) so they are tested apart from any real service."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest
from yigongti_contracts.topics import TOPICS
from yigongti_deploy import stack as stack_module
from yigongti_deploy.embedded import port_answers

FAKE_SERVICE = """\
import os, signal, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

marker, point = os.environ.get("YGT_FAULT_MARKER"), os.environ.get("YGT_FAULT_POINT")
if point == "boot" and marker and not os.path.exists(marker):
    open(marker, "w").write(point)
    os.kill(os.getpid(), signal.SIGKILL)

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ.get(self.path.strip("/").upper(), "ok").encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
print("started", os.environ["SERVICE_NAME"], flush=True)
HTTPServer((os.environ["HTTP_HOST"], int(os.environ["HTTP_PORT"])), Handler).serve_forever()
"""


@pytest.fixture
def fake_service(tmp_path: Path) -> str:
    path = tmp_path / "fake-service"
    path.write_text(f"#!{sys.executable}\n{FAKE_SERVICE}")
    path.chmod(0o755)
    return str(path)


async def test_service_process_is_ready_killed_at_a_fault_point_and_restarted(
    service_process, kit_env, fake_service
):
    proc = await service_process(
        "lab", kit_env("lab"), fault_point="boot", wait_ready=False, script=fake_service
    )
    assert await proc.wait_exit(10) == -9  # SIGKILLed itself at the fault point
    assert proc.faulted

    await proc.restart()  # the marker lets it pass this time
    async with httpx.AsyncClient() as client:
        response = await client.get(proc.url + "/database_url")
    assert response.status_code == 200
    assert response.text == kit_env("lab")["DATABASE_URL"]

    assert await proc.kill() == -9
    assert not proc.running


def test_kit_env_points_a_service_at_this_tests_resources(
    kit_env, kit_settings, schema, topic_prefix, group_id, kafka_bootstrap, broker_kind
):
    env = kit_env("lab", LOG_LEVEL="DEBUG")
    assert env["DB_SCHEMA"] == schema
    assert env["TOPIC_PREFIX"] == topic_prefix
    assert env["CONSUMER_GROUP"].startswith(group_id)
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == kafka_bootstrap
    assert env["LOG_LEVEL"] == "DEBUG"
    settings = kit_settings("lab")
    assert settings.db_schema == schema
    assert settings.kafka_broker_kind == broker_kind
    assert settings.auth_public_key and os.path.exists(settings.terminals_file)
    assert "DB_SCHEMA" not in os.environ or os.environ["DB_SCHEMA"] != schema


async def test_stack_starts_everything_and_cleans_up(
    monkeypatch, tmp_path, fake_service, admin_database_url
):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)  # its own embedded broker
    monkeypatch.setenv("DATABASE_URL", admin_database_url)
    monkeypatch.setattr(stack_module, "SERVICES", (stack_module.ServiceEntry("lab", fake_service),))
    stack = stack_module.Stack(tmp_path / "run")
    await stack.start()
    try:
        lab = stack.services["lab"]
        assert lab.url in stack.describe() and stack.bootstrap in stack.describe()
        async with httpx.AsyncClient() as client:
            env = {
                name: (await client.get(f"{lab.url}/{name.lower()}")).text
                for name in ("SERVICE_NAME", "DB_SCHEMA", "KAFKA_BROKER_KIND", "TERMINALS_FILE")
            }
        assert env["SERVICE_NAME"] == env["DB_SCHEMA"] == "lab"
        assert env["KAFKA_BROKER_KIND"] == "embedded"
        assert env["TERMINALS_FILE"] == str(stack.keys.terminals_file)

        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
        await admin.start()
        try:
            described = {
                t["topic"]: len(t["partitions"])
                for t in await admin.describe_topics([t.name for t in TOPICS])
            }
        finally:
            await admin.close()
        assert described == {t.name: t.partitions for t in TOPICS}

        conn = await asyncpg.connect(stack.database_url)
        await conn.close()
    finally:
        await stack.stop()

    assert not lab.running
    assert not port_answers("127.0.0.1", int(stack.bootstrap.rsplit(":", 1)[1]))
    conn = await asyncpg.connect(admin_database_url)
    try:
        left = await conn.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", stack.database_name
        )
    finally:
        await conn.close()
    assert left is None

"""The lab service in this process on the real broker and database, and a
clinic terminal (the `yigongti` library, its own SQLite queue) that reaches
the broker through a proxy the test can cut: the township link."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import harness
import pytest_asyncio
from harness_proxy import TcpProxy
from labflow import EventLog
from yigongti_kit.auth import issue_token
from yigongti_kit.service import ServiceRuntime
from yigongti_lab.app import spec
from yigongti_terminal.client import TerminalClient
from yigongti_terminal.config import TerminalConfig


@dataclass
class Clinic:
    lab: ServiceRuntime
    events: EventLog
    topics: dict[str, str]
    proxy: TcpProxy
    config: TerminalConfig
    client: TerminalClient

    @property
    def pool(self):
        return self.lab.pool


def terminal_config(home: Path, dev_keys, *, bootstrap: str, route: dict[str, str],
                    broker_kind: str, topic_prefix: str, lab_url: str) -> TerminalConfig:
    token = home / "lab.token"
    home.mkdir(parents=True, exist_ok=True)
    token.write_text(issue_token(dev_keys.auth_private_pem, user="nurse-3",
                                 institution=dev_keys.institution_id,
                                 roles=["clinic_terminal"], audience="lab"))
    config = TerminalConfig(
        home=home, terminal_id=dev_keys.terminal_id, institution_id=dev_keys.institution_id,
        key_file=dev_keys.directory / f"terminal_{dev_keys.terminal_id}.key",
        user_id="nurse-3", kafka_bootstrap=bootstrap, kafka_broker_kind=broker_kind,
        topic_prefix=topic_prefix, broker_route=route, services={"lab": lab_url},
        tokens={"lab": token}, send_timeout_s=3.0)
    config.save()
    return config


@pytest_asyncio.fixture
async def clinic(kit_settings, topics, topic_prefix, dev_keys, kafka_bootstrap, broker_kind,
                 tmp_path):
    lab_topics = await topics("lab")
    settings = kit_settings("lab")
    runtime = ServiceRuntime(spec(), settings)
    await runtime.start()
    events = EventLog()
    await events.start(harness.client_kwargs(kafka_bootstrap, "consumer", broker_kind),
                       lab_topics["lab.events.v1"])
    host, _, port = kafka_bootstrap.rpartition(":")
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    through = f"{proxy.host}:{proxy.port}"
    config = terminal_config(tmp_path / "terminal", dev_keys, bootstrap=through,
                             route={kafka_bootstrap: through}, broker_kind=broker_kind,
                             topic_prefix=topic_prefix,
                             lab_url=f"http://127.0.0.1:{settings.http_port}")
    client = TerminalClient(config)
    try:
        yield Clinic(runtime, events, lab_topics, proxy, config, client)
    finally:
        client.close()
        await proxy.close()
        await events.stop()
        await runtime.stop()

"""Runs the MLLP listener for analysers inside the lab service when MLLP_PORT
is set: each ORU^R01 becomes AnalyserResults on the lab's own intake topic,
signed as the LIS bridge terminal, and is acknowledged only once on Kafka.

The listener has its own producer (the runtime's subscribers and relay have
theirs), with the kit's producer settings (acks=all), as the LIS bridge's
Kafka user when LIS_KAFKA_SASL_USERNAME is set (the lab's own user may not
write its intake). With MLLP_TLS_CERT_FILE/KEY_FILE the port speaks TLS."""

from __future__ import annotations

import logging
from pathlib import Path

from aiokafka import AIOKafkaProducer
from yigongti_contracts.topics import topic_name
from yigongti_kit.intake_auth import TerminalSigner
from yigongti_kit.settings import KitSettings, kafka_client_kwargs
from yigongti_kit.terminal import TerminalClient

from . import store
from .config import LabSettings
from .hl7_results import ResultsTranslator
from .mllp import start_mllp_server, stop_mllp_server

log = logging.getLogger("yigongti.lab.mllp")


async def start(runtime):
    settings = LabSettings()
    if settings.mllp_port is None:
        return None
    if not (settings.lis_terminal_id and settings.lis_terminal_key_file):
        raise RuntimeError("MLLP_PORT needs LIS_TERMINAL_ID and LIS_TERMINAL_KEY_FILE")
    signer = TerminalSigner(settings.lis_terminal_id, _read(settings.lis_terminal_key_file))
    limits = settings.mllp_limits()  # a malformed MLLP_ALLOWED_PEERS fails here, at start-up
    if limits.allowed_peers is not None and all(n.is_loopback for n in limits.allowed_peers) \
            and settings.mllp_host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("MLLP_HOST is %s but MLLP_ALLOWED_PEERS admits loopback only: "
                    "no analyser can connect", settings.mllp_host)
    tls = settings.mllp_tls()  # a missing or unreadable certificate fails here, at start-up
    producer = AIOKafkaProducer(**kafka_client_kwargs(producer_settings(runtime.settings, settings),
                                                      "producer"))
    await producer.start()
    publisher = TerminalClient(signer, producer,
                               topic_name("lab.intake.v1", runtime.settings.topic_prefix))
    try:
        server = await start_mllp_server(
            settings.mllp_host, settings.mllp_port,
            translator=ResultsTranslator(facility=settings.lab_centre,
                                         allowed_senders=settings.mllp_senders()),
            publisher=publisher, limits=limits, tls=tls,
            trace_links=lambda barcodes: _order_traces(runtime.pool, barcodes))
    except BaseException:
        await producer.stop()
        raise

    async def stop() -> None:
        try:
            await stop_mllp_server(server)
        finally:
            await producer.stop()

    return stop


def producer_settings(kit: KitSettings, lab: LabSettings) -> KitSettings:
    """The kit's settings with the LIS bridge's Kafka user, when one is given."""
    if lab.lis_kafka_sasl_username is None:
        return kit
    return kit.model_copy(update={"kafka_sasl_username": lab.lis_kafka_sasl_username,
                                  "kafka_sasl_password": lab.lis_kafka_sasl_password})


def _read(path: str) -> str:
    return Path(path).read_text()  # once, at start-up


async def _order_traces(pool, barcodes: list[str]) -> list[str]:
    async with pool.acquire() as conn:
        return await store.order_traces(conn, barcodes)

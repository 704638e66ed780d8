"""The MLLP listener on a loopback port, publishing to the real broker: an ORU^R01
is answered AA only once its signed AnalyserResults is on lab.intake.v1; a
malformed message is answered AR and publishes nothing."""

from __future__ import annotations

import asyncio
import json

import harness
import hl7
import pytest_asyncio
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from labflow import EventLog, header
from yigongti_kit.intake_auth import verify_record
from yigongti_kit.terminal import TerminalClient
from yigongti_lab.hl7_results import ResultsTranslator
from yigongti_lab.mllp import (
    MllpClient,
    MllpLimits,
    frame,
    read_frame,
    send_mllp,
    start_mllp_server,
    stop_mllp_server,
)

ANALYSER_RESULTS = "yigongti.lab.analyser_results.sent.v1"


def oru(control_id: str, barcode: str, *, charset: str = "UNICODE UTF-8") -> bytes:
    return ("\r".join([
        f"MSH|^~\\&|BS-2000M|Mindray|LIS|652325-L01|20240315103000||ORU^R01|{control_id}|P|"
        f"2.3.1||||0||{charset}",
        "PID|1||P0099^^^H^MR||WANG^Fang||19580211|F",
        f"OBR|1||{barcode}|^^^CHEM|||20240315102500",
        "OBX|1|NM|K^Potassium^L||4.52|mmol/l|3.50-5.30|N|||F|||20240315102900",
        "OBX|2|NM|2951-2^Sodium^LN||140|mmol/L|137-147|N|||F|||20240315102900",
        "OBX|3|SN|CTNI^hs-cTnI^L||<^2|ng/L|<26.2|N|||F|||20240315102900",
    ]) + "\r").encode()


def msa(ack: bytes, encoding: str = "utf-8") -> hl7.Segment:
    return hl7.parse(ack.decode(encoding)).segment("MSA")


class FailingPublisher:
    def __init__(self) -> None:
        self.calls = 0

    async def publish(self, event, **kwargs) -> str:
        self.calls += 1
        raise ConnectionError("broker unreachable")


class MemoryPublisher:
    def __init__(self) -> None:
        self.published: list = []

    async def publish(self, event, **kwargs) -> str:
        self.published.append((kwargs.get("ce_id"), event))
        return kwargs.get("ce_id")


async def _server(publisher, **kwargs):
    server = await start_mllp_server("127.0.0.1", 0, translator=ResultsTranslator(),
                                     publisher=publisher, **kwargs)
    return server, server.sockets[0].getsockname()[1]


@pytest_asyncio.fixture
async def bridge(topics, kafka_bootstrap, broker_kind, dev_keys):
    """The listener, publishing as the registered LIS bridge terminal (the dev
    terminal), and a reader of the intake topic."""
    names = await topics("lab")
    intake = names["lab.intake.v1"]
    producer = AIOKafkaProducer(**harness.client_kwargs(kafka_bootstrap, "producer", broker_kind))
    await producer.start()
    publisher = TerminalClient(dev_keys.signer(), producer, intake)
    server, port = await _server(publisher)
    consumer_kwargs = harness.client_kwargs(kafka_bootstrap, "consumer", broker_kind)
    log = EventLog()
    await log.start(consumer_kwargs, intake)
    offsets = AIOKafkaConsumer(**{**consumer_kwargs, "group_id": None})
    await offsets.start()

    async def published() -> int:
        """How many records the intake topic holds (end offsets)."""
        partitions = offsets.partitions_for_topic(intake) or set()
        while not partitions:
            await offsets._client.force_metadata_update()
            partitions = offsets.partitions_for_topic(intake) or set()
        ends = await offsets.end_offsets([TopicPartition(intake, p) for p in partitions])
        return sum(ends.values())

    try:
        yield port, log, published
    finally:
        await stop_mllp_server(server)
        await log.stop()
        await offsets.stop()
        await producer.stop()


async def test_oru_is_acknowledged_once_its_signed_results_are_on_intake(bridge, dev_keys):
    port, log, published = bridge
    ack = await send_mllp("127.0.0.1", port, oru("MSG-1", "B24031500101"))
    assert (str(msa(ack)(1)), str(msa(ack)(2))) == ("AA", "MSG-1")
    assert await published() == 1  # AA means it is on Kafka already

    [record] = await log.wait_for(lambda r: header(r, "ce_type") == ANALYSER_RESULTS)
    body = json.loads(record.value)
    assert body["barcode"] == "B24031500101" and record.key == b"B24031500101"
    assert body["analyser_id"] == "BS-2000M" and body["message_id"] == "MSG-1"
    assert body["run_at"] == "2024-03-15T02:29:00Z"
    assert [(o["code"], o["value"], o["unit"], o["comparator"])
            for o in body["observations"]] == [
        ("K", "4.52", "mmol/L", None), ("NA", "140", "mmol/L", None), ("CTNI", "2", "ng/L", "<")]
    assert "WANG" not in record.value.decode() and "P0099" not in record.value.decode()

    registry = yaml.safe_load(dev_keys.terminals_file.read_text())["terminals"]
    public_key = next(t["public_key"] for t in registry if t["terminal_id"] == dev_keys.terminal_id)
    assert verify_record(record.headers, record.value, public_key,
                         received_at=record.timestamp, max_skew_s=300) is None
    assert header(record, "ce_source") == f"/terminals/{dev_keys.terminal_id}"


async def test_malformed_message_is_rejected_and_nothing_is_published(bridge):
    port, _, published = bridge
    malformed = oru("MSG-2", "B24031500102").replace(b"OBX|2|", b"OBX2|", 1)
    ack = await send_mllp("127.0.0.1", port, malformed)
    assert str(msa(ack)(1)) == "AR"
    unknown = oru("MSG-3", "B24031500103").replace(b"K^Potassium", b"KX^Potassium")
    ack = await send_mllp("127.0.0.1", port, unknown)
    assert str(msa(ack)(1)) == "AE" and "OBX 1" in str(msa(ack)(3))
    assert await published() == 0


async def test_several_messages_on_one_connection_and_a_resend_is_the_same_record(bridge):
    port, log, published = bridge
    async with await MllpClient.connect("127.0.0.1", port) as client:
        first = await client.send(oru("MSG-4", "B24031500104"))
        second = await client.send(oru("MSG-5", "B24031500105", charset="GB 18030-2000"))
        again = await client.send(oru("MSG-4", "B24031500104"))
    assert [str(msa(a, "gb18030")(1)) for a in (first, second, again)] == ["AA"] * 3
    assert await published() == 3
    records = await log.wait_for(lambda r: header(r, "ce_type") == ANALYSER_RESULTS, count=3)
    by_barcode: dict[str, set[str]] = {}
    for record in records:
        by_barcode.setdefault(record.key.decode(), set()).add(header(record, "ce_id"))
    # the resent message carries the same ce_id: the lab's inbox takes it as a duplicate
    assert {k: len(v) for k, v in by_barcode.items()} == {"B24031500104": 1, "B24031500105": 1}


async def test_failed_publish_answers_ar_not_aa():
    publisher = FailingPublisher()
    server, port = await _server(publisher)
    try:
        ack = await send_mllp("127.0.0.1", port, oru("MSG-6", "B24031500106"))
    finally:
        await stop_mllp_server(server)
    assert str(msa(ack)(1)) == "AR" and "send the message again" in str(msa(ack)(3))
    assert publisher.calls == 1


async def test_partial_writes_oversized_frames_and_idle_connections():
    publisher = MemoryPublisher()
    server, port = await _server(publisher,
                                 limits=MllpLimits(max_message_bytes=2048, idle_timeout_s=0.5))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        framed = frame(oru("MSG-7", "B24031500107"))
        for i in range(0, len(framed), 7):  # dribbled in small pieces
            writer.write(framed[i:i + 7])
            await writer.drain()
            await asyncio.sleep(0)
        assert str(msa(await read_frame(reader))(1)) == "AA"

        huge = oru("MSG-8", "B24031500108").replace(b"|F|||2024", b"|F|" + b"x" * 4000 + b"||2024")
        writer.write(frame(huge))
        await writer.drain()
        refused = await read_frame(reader)
        assert str(msa(refused)(1)) == "AR" and str(msa(refused)(2)) == "MSG-8"
        assert "larger than 2048" in str(msa(refused)(3))

        # the connection still serves, then closes when idle
        writer.write(frame(oru("MSG-9", "B24031500109")))
        await writer.drain()
        assert str(msa(await read_frame(reader))(1)) == "AA"
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        writer.close()
    finally:
        await stop_mllp_server(server)
    assert [event.barcode for _, event in publisher.published] == [
        "B24031500107", "B24031500109"]

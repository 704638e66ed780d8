"""The analyser interface: an MLLP listener that turns HL7 ORU^R01 into signed
`AnalyserResults` on lab.intake.v1, and answers each message with an ACK.

MLLP (HL7 v2 minimal lower layer protocol) frames each message as

    0x0B  message bytes  0x1C 0x0D

over a TCP connection that carries many messages, one after the other: the
sender waits for the ACK of one before sending the next. For each frame:

1. `translator.translate` reads it (hl7_results.py);
2. its `AnalyserResults` (one per tube) are published by `publisher`, a
   `TerminalClient` signing with the LIS bridge's terminal key — the bridge is a
   registered terminal, so the lab's intake checks these records like any other;
3. only when every send is acknowledged by the broker is the answer AA: an AA
   means the results are on Kafka. A failed send answers AR ("send again"):
   the ce_id of a result is derived from the message (sender, MSH-7, MSH-10,
   barcode), so a resent message is a duplicate for the lab's inbox, not a
   second result.

Frames larger than `max_frame_bytes` are read to their end, discarded and
answered AR; a connection silent for `idle_timeout_s` is closed.

`send_mllp` / `MllpClient` are the sending side, for tests, the demo and bench.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .hl7_results import (
    HL7_INTERNAL_ERROR,
    AckCode,
    Hl7Error,
    ResultsTranslator,
    Translation,
)

log = logging.getLogger("yigongti.lab.mllp")
tracer = trace.get_tracer("yigongti.lab.mllp")
_messages = metrics.get_meter("yigongti_lab").create_counter(
    "lab.hl7.messages", unit="{message}",
    description="HL7 messages received over MLLP, by ACK code and reason",
)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
CARRIAGE_RETURN = b"\r"

MAX_FRAME_BYTES = 1 << 20  # 1 MiB: an ORU^R01 of 100 results is a few KiB (assumed ceiling)
IDLE_TIMEOUT_S = 300.0  # analysers keep connections open between runs (assumed)
_HEAD_BYTES = 4096  # the start of an oversized frame, kept to address its ACK
_READ_CHUNK = 65536


class Publisher(Protocol):
    """What publishes the results: `yigongti_kit.terminal.TerminalClient`."""

    async def publish(self, event: Any, **kwargs: Any) -> str: ...


# --- framing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One framed message; `oversized` frames carry only their first bytes."""

    data: bytes
    oversized: bool = False


class FrameReader:
    """MLLP frames out of a byte stream, fed as it arrives (partial reads welcome).

    Bytes outside a frame (a stray CR after the end block, noise) are dropped; a
    start block inside a frame abandons the frame begun before it (a sender that
    restarted). The buffer never holds more than `max_frame_bytes` plus one read.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._oversized = False
        self._head = b""

    @property
    def in_frame(self) -> bool:
        return self._in_frame

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while True:
            if not self._in_frame:
                start = self._buffer.find(START_BLOCK)
                if start < 0:
                    self._buffer.clear()
                    return frames
                del self._buffer[: start + 1]
                self._in_frame, self._oversized, self._head = True, False, b""
            end = self._buffer.find(END_BLOCK)
            restart = self._buffer.find(START_BLOCK, 0, end if end >= 0 else len(self._buffer))
            if restart >= 0:
                del self._buffer[: restart + 1]
                self._oversized, self._head = False, b""
                continue
            if end < 0:
                if self._oversized:
                    self._buffer.clear()
                elif len(self._buffer) > self.max_frame_bytes:
                    self._oversized = True
                    self._head = bytes(self._buffer[:_HEAD_BYTES])
                    self._buffer.clear()
                return frames
            body = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._buffer[:1] == CARRIAGE_RETURN:
                del self._buffer[:1]
            self._in_frame = False
            if self._oversized or len(body) > self.max_frame_bytes:
                frames.append(Frame(self._head or body[:_HEAD_BYTES], oversized=True))
            else:
                frames.append(Frame(body))


def frame(message: bytes) -> bytes:
    """`message` wrapped in MLLP start and end blocks."""
    return START_BLOCK + message + END_BLOCK + CARRIAGE_RETURN


# --- one message -----------------------------------------------------------------------


async def process_message(
    raw: bytes, *, translator: ResultsTranslator, publisher: Publisher
) -> bytes:
    """Translate, publish, answer: the ACK bytes for one HL7 message (unframed).

    Also the core of an HTTP endpoint, should one be wanted beside MLLP.
    """
    with tracer.start_as_current_span("hl7 ORU^R01 process", kind=SpanKind.SERVER) as span:
        translation = translator.translate(raw)
        if translation.ack_code is AckCode.AA:
            translation = await _publish(translation, publisher)
        return _answer(translation, span)


async def _publish(translation: Translation, publisher: Publisher) -> Translation:
    try:
        async with asyncio.TaskGroup() as group:
            for ce_id, result in translation.records:
                group.create_task(publisher.publish(result, ce_id=ce_id))
    except Exception as exc:  # any failure to store is "send again"
        failure = exc.exceptions[0] if isinstance(exc, ExceptionGroup) else exc
        log.warning("hl7 results not published: %s", type(failure).__name__)
        return translation.refused(Hl7Error(
            AckCode.AR, "not_stored", "results could not be stored now; send the message again",
            hl7_code=HL7_INTERNAL_ERROR))
    return translation


def _answer(translation: Translation, span: Any) -> bytes:
    code = translation.ack_code
    reason = translation.errors[0].reason if translation.errors else "accepted"
    span.set_attribute("hl7.ack_code", code.value)
    span.set_attribute("hl7.reason", reason)
    span.set_attribute("hl7.results", len(translation.records))
    if code is not AckCode.AA:
        span.set_status(Status(StatusCode.ERROR, reason))
    _messages.add(1, {"ack_code": code.value, "reason": reason})
    return translation.ack()


def _refuse_oversized(head: bytes, translator: ResultsTranslator, limit: int) -> bytes:
    with tracer.start_as_current_span("hl7 ORU^R01 process", kind=SpanKind.SERVER) as span:
        error = Hl7Error(AckCode.AR, "oversized", f"message larger than {limit} bytes",
                         hl7_code=HL7_INTERNAL_ERROR)
        return _answer(translator.refuse(head, error), span)


# --- the server ------------------------------------------------------------------------

_connections: weakref.WeakKeyDictionary[asyncio.AbstractServer, set[asyncio.StreamWriter]] = (
    weakref.WeakKeyDictionary()
)


async def start_mllp_server(
    host: str,
    port: int,
    *,
    translator: ResultsTranslator,
    publisher: Publisher,
    max_frame_bytes: int = MAX_FRAME_BYTES,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
) -> asyncio.Server:
    """Listen for MLLP on host:port (port 0: any free port, see `server.sockets`).

    Stop with `stop_mllp_server(server)`, which also closes open connections.
    """
    writers: set[asyncio.StreamWriter] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            await _serve_connection(reader, writer, translator, publisher, max_frame_bytes,
                                    idle_timeout_s)
        finally:
            writers.discard(writer)

    server = await asyncio.start_server(serve, host, port)
    _connections[server] = writers
    return server


async def stop_mllp_server(server: asyncio.Server, timeout_s: float = 5.0) -> None:
    """Stop listening and close every connection (a message being processed gets
    no ACK; its sender sends it again, which the inbox takes as a duplicate)."""
    server.close()
    for writer in list(_connections.get(server, ())):
        writer.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await server.wait_closed()


async def _serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    translator: ResultsTranslator,
    publisher: Publisher,
    max_frame_bytes: int,
    idle_timeout_s: float,
) -> None:
    frames = FrameReader(max_frame_bytes)
    try:
        while True:
            try:
                async with asyncio.timeout(idle_timeout_s):
                    data = await reader.read(_READ_CHUNK)
            except TimeoutError:
                log.info("mllp connection idle for %ss: closed", idle_timeout_s)
                return
            if not data:
                return
            for item in frames.feed(data):
                if item.oversized:
                    ack = _refuse_oversized(item.data, translator, max_frame_bytes)
                else:
                    ack = await process_message(item.data, translator=translator,
                                                publisher=publisher)
                writer.write(frame(ack))
                await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


# --- the sending side ------------------------------------------------------------------


class MllpClient:
    """One MLLP connection for many messages: `await client.send(message) -> ack`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def connect(cls, host: str, port: int) -> MllpClient:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, message: bytes, *, timeout_s: float = 30.0) -> bytes:
        """Send one message (unframed) and return its ACK (unframed)."""
        self._writer.write(frame(message))
        await self._writer.drain()
        async with asyncio.timeout(timeout_s):
            return await read_frame(self._reader)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    async def __aenter__(self) -> MllpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """The next framed message on `reader`, unframed."""
    await reader.readuntil(START_BLOCK)
    body = await reader.readuntil(END_BLOCK + CARRIAGE_RETURN)
    return body[:-2]


async def send_mllp(host: str, port: int, message: bytes, *, timeout_s: float = 30.0) -> bytes:
    """Send one HL7 message over a new MLLP connection; returns the ACK bytes."""
    async with await MllpClient.connect(host, port) as client:
        return await client.send(message, timeout_s=timeout_s)


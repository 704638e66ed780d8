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

The port faces the outside as much as Kafka does; `MllpLimits` bounds what a
connection may take (LabSettings MLLP_*, README):

- peers: only addresses in `allowed_peers` are served; others are closed at
  once, unread and unanswered (default: loopback only);
- size: a frame larger than `max_message_bytes` is read to its end,
  discarded and answered AR;
- time: a message must arrive whole within `message_timeout_s` of its start
  block, else it is answered AR ("no end block") and the connection closed;
  a connection silent for `idle_timeout_s` is closed; an ACK the peer does
  not read within `message_timeout_s` closes it too;
- garbage: more than `max_message_bytes` of bytes outside frames, or of
  frames that are not HL7, since the last HL7 message closes the connection;
- connections: at most `max_connections_per_peer` per peer address and
  `max_connections` in all. A newcomer over a limit makes room by closing an
  idle connection (not inside a message): first those that never carried an
  accepted message, oldest first, then the longest idle. So a flood of idle
  connections pushes itself out, a working analyser's connection stays, and
  an analyser reconnecting over its own dead connections gets in. When every
  connection is busy the newcomer is closed.

Senders are checked again per message against the translator's
`allowed_senders` (MSH-3/MSH-4, hl7_results.py).

`send_mllp` / `MllpClient` are the sending side, for tests, the demo and bench.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from yigongti_kit.telemetry import context_from_traceparent

from .hl7_results import (
    HL7_INTERNAL_ERROR,
    AckCode,
    Hl7Error,
    ResultsTranslator,
    Translation,
)

log = logging.getLogger("yigongti.lab.mllp")

# The traceparents of the orders that tubes (by barcode) belong to.
TraceLinks = Callable[[list[str]], Awaitable[list[str]]]
tracer = trace.get_tracer("yigongti.lab.mllp")
_messages = metrics.get_meter("yigongti_lab").create_counter(
    "lab.hl7.messages", unit="{message}",
    description="HL7 messages received over MLLP, by ACK code and reason",
)
_connections_counted = metrics.get_meter("yigongti_lab").create_counter(
    "lab.mllp.connections", unit="{connection}",
    description="MLLP connections opened and closed, by outcome (accepted, refused_peer, "
                "refused_full, evicted, idle, incomplete, not_mllp, unread_ack)",
)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
CARRIAGE_RETURN = b"\r"

MAX_FRAME_BYTES = 1 << 20  # 1 MiB: an ORU^R01 of 100 results is a few KiB (assumed ceiling)
IDLE_TIMEOUT_S = 300.0  # analysers keep connections open between runs (assumed)
MESSAGE_TIMEOUT_S = 30.0  # a few KiB on a LAN take milliseconds; slow serial bridges (assumed)
MAX_CONNECTIONS_PER_PEER = 4  # an analyser or LIS host keeps one or two (assumed)
MAX_CONNECTIONS = 64  # a county lab centre has tens of analysers (assumed)
LOOPBACK = ("127.0.0.0/8", "::1/128")
_HEAD_BYTES = 4096  # the start of an oversized frame, kept to address its ACK
_READ_CHUNK = 65536


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(text: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or networks ("10.1.2.3", "10.1.2.0/24", "fd00::/8")."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in text
                 if item.strip())


@dataclass(frozen=True)
class MllpLimits:
    """What the analyser port allows each connection (see the module docstring)."""

    max_message_bytes: int = MAX_FRAME_BYTES
    idle_timeout_s: float = IDLE_TIMEOUT_S
    message_timeout_s: float = MESSAGE_TIMEOUT_S
    max_connections_per_peer: int = MAX_CONNECTIONS_PER_PEER
    max_connections: int = MAX_CONNECTIONS
    allowed_peers: tuple[Network, ...] | None = networks(LOOPBACK)  # None: any peer

    def allows(self, host: str) -> bool:
        if self.allowed_peers is None:
            return True
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:  # not an IP peer (a unix socket): not an analyser
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.allowed_peers)


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
        self.outside = 0  # bytes dropped outside frames (the caller resets it)

    @property
    def in_frame(self) -> bool:
        return self._in_frame

    def head(self) -> bytes:
        """The first bytes of the frame in progress (to address its refusal)."""
        return self._head or bytes(self._buffer[:_HEAD_BYTES])

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while True:
            if not self._in_frame:
                start = self._buffer.find(START_BLOCK)
                if start < 0:
                    self.outside += len(self._buffer)
                    self._buffer.clear()
                    return frames
                self.outside += start
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
    ack, _, _ = await _process(raw, translator, publisher)
    return ack


async def _process(raw: bytes, translator: ResultsTranslator, publisher: Publisher,
                   trace_links: TraceLinks | None = None) -> tuple[bytes, AckCode, str]:
    """The ACK bytes, its code and reason."""
    with tracer.start_as_current_span("hl7 ORU^R01 process", kind=SpanKind.SERVER) as span:
        translation = translator.translate(raw)
        if trace_links is not None and translation.records:
            await _link_orders(span, trace_links, [r.barcode for _, r in translation.records])
        if translation.ack_code is AckCode.AA:
            translation = await _publish(translation, publisher)
        reason = translation.errors[0].reason if translation.errors else "accepted"
        return _answer(translation, span), translation.ack_code, reason


async def _link_orders(span: Any, trace_links: TraceLinks, barcodes: list[str]) -> None:
    """HL7 v2 carries no trace context: the message's trace starts here, linked
    to the traces the tubes' orders were placed in (one journey, joined by links)."""
    try:
        traceparents = await trace_links(barcodes)
    except Exception as exc:  # noqa: BLE001 - a missing link never costs a result
        log.warning("hl7 trace links not read: %s", type(exc).__name__)
        return
    for traceparent in traceparents:
        context = trace.get_current_span(context_from_traceparent(traceparent)).get_span_context()
        if context.is_valid:
            span.add_link(context)


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


def _refuse(head: bytes, translator: ResultsTranslator, reason: str, text: str) -> bytes:
    """The AR for a frame known only by its first bytes (too large, never ended)."""
    with tracer.start_as_current_span("hl7 ORU^R01 process", kind=SpanKind.SERVER) as span:
        error = Hl7Error(AckCode.AR, reason, text, hl7_code=HL7_INTERNAL_ERROR)
        return _answer(translator.refuse(head, error), span)


# --- the server ------------------------------------------------------------------------


@dataclass(eq=False)
class _Connection:
    writer: asyncio.StreamWriter
    peer: str
    last_active: float
    proven: bool = False  # has carried a message answered AA
    busy: bool = False  # inside a message, or answering one


@dataclass
class _Port:
    """The open connections of one listener, and its limits."""

    limits: MllpLimits
    open: set[_Connection] = field(default_factory=set)

    def admit(self, new: _Connection) -> bool:
        """Register `new`, making room under both limits by closing idle
        connections; False (and nothing registered) when there is no room."""
        for pool, limit in (([c for c in self.open if c.peer == new.peer],
                             self.limits.max_connections_per_peer),
                            (list(self.open), self.limits.max_connections)):
            while len(pool) >= limit:
                idle = [c for c in pool if not c.busy]
                if not idle:
                    return False
                # Never proven first, then the longest idle.
                victim = min(idle, key=lambda c: (c.proven, c.last_active))
                pool.remove(victim)
                self.close(victim, "evicted")
        self.open.add(new)
        return True

    def close(self, connection: _Connection, outcome: str) -> None:
        if connection in self.open:
            self.open.discard(connection)
            _connections_counted.add(1, {"outcome": outcome})
        connection.writer.close()


_ports: weakref.WeakKeyDictionary[asyncio.AbstractServer, _Port] = weakref.WeakKeyDictionary()


async def start_mllp_server(
    host: str,
    port: int,
    *,
    translator: ResultsTranslator,
    publisher: Publisher,
    limits: MllpLimits | None = None,
    tls: ssl.SSLContext | None = None,
    trace_links: TraceLinks | None = None,
) -> asyncio.Server:
    """Listen for MLLP on host:port (port 0: any free port, see `server.sockets`).

    With `tls` (a server context; one that requires client certificates admits
    only LIS hosts holding one), a connection is upgraded to TLS once its peer
    passed MLLP_ALLOWED_PEERS: a peer off the list never gets a handshake.

    Stop with `stop_mllp_server(server)`, which also closes open connections.
    """
    state = _Port(limits or MllpLimits())
    loop = asyncio.get_running_loop()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) else ""
        if not state.limits.allows(peer):
            _connections_counted.add(1, {"outcome": "refused_peer"})
            log.warning("mllp connection from %s refused: not in MLLP_ALLOWED_PEERS", peer)
            writer.close()
            return
        connection = _Connection(writer, peer, loop.time())
        if not state.admit(connection):
            _connections_counted.add(1, {"outcome": "refused_full"})
            log.warning("mllp connection from %s refused: every connection is busy", peer)
            writer.close()
            return
        if tls is not None:
            try:
                async with asyncio.timeout(state.limits.message_timeout_s):
                    await writer.start_tls(tls)
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                log.warning("mllp connection from %s refused: TLS handshake failed (%s)",
                            peer, type(exc).__name__)
                state.close(connection, "refused_tls")
                return
        _connections_counted.add(1, {"outcome": "accepted"})
        outcome = "closed"
        try:
            outcome = await _serve_connection(reader, connection, translator, publisher,
                                              state.limits, trace_links)
        finally:
            state.close(connection, outcome)
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(serve, host, port)
    _ports[server] = state
    return server


async def stop_mllp_server(server: asyncio.Server, timeout_s: float = 5.0) -> None:
    """Stop listening and close every connection (a message being processed gets
    no ACK; its sender sends it again, which the inbox takes as a duplicate)."""
    server.close()
    state = _ports.get(server)
    for connection in list(state.open if state else ()):
        state.close(connection, "stopped")
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await server.wait_closed()


async def _serve_connection(
    reader: asyncio.StreamReader,
    connection: _Connection,
    translator: ResultsTranslator,
    publisher: Publisher,
    limits: MllpLimits,
    trace_links: TraceLinks | None = None,
) -> str:
    """Serve one connection until it ends; returns why it ended (a metric outcome)."""
    loop = asyncio.get_running_loop()
    frames = FrameReader(limits.max_message_bytes)
    deadline = 0.0  # when the frame in progress must be complete
    garbage = 0  # bytes that were not HL7 since the last HL7 message
    try:
        while True:
            wait = deadline - loop.time() if frames.in_frame else limits.idle_timeout_s
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    data = await reader.read(_READ_CHUNK)
            except TimeoutError:
                if not frames.in_frame:
                    log.info("mllp connection idle for %ss: closed", limits.idle_timeout_s)
                    return "idle"
                log.info("mllp message without its end block after %ss: refused, closed",
                         limits.message_timeout_s)
                await _send(connection, _refuse(
                    frames.head(), translator, "incomplete",
                    f"no end block within {limits.message_timeout_s:g} s of the start block"),
                    limits)
                return "incomplete"
            if not data:
                return "closed"
            connection.last_active = loop.time()
            in_frame_before = frames.in_frame
            items = frames.feed(data)
            if frames.in_frame and (items or not in_frame_before):
                deadline = loop.time() + limits.message_timeout_s
            connection.busy = True
            for item in items:
                if item.oversized:
                    ack, reason = _refuse(item.data, translator, "oversized",
                                          f"message larger than {limits.max_message_bytes} "
                                          "bytes"), "oversized"
                    code = AckCode.AR
                else:
                    ack, code, reason = await _process(item.data, translator, publisher,
                                                       trace_links)
                garbage = garbage + len(item.data) if reason in _NOT_HL7 else 0
                connection.proven = connection.proven or code is AckCode.AA
                if not await _send(connection, ack, limits):
                    return "unread_ack"
            connection.busy = frames.in_frame
            garbage += frames.outside
            frames.outside = 0
            if garbage > limits.max_message_bytes:
                log.info("mllp connection sent more than %s bytes that are not HL7: closed",
                         limits.max_message_bytes)
                return "not_mllp"
    except (ConnectionError, asyncio.IncompleteReadError):
        return "closed"


# Refusals that mean "these bytes are not an HL7 message".
_NOT_HL7 = frozenset({"not_hl7", "bad_encoding", "malformed_message", "malformed_segment"})


async def _send(connection: _Connection, ack: bytes, limits: MllpLimits) -> bool:
    """Write a framed ACK; False when the peer does not take it in time."""
    connection.writer.write(frame(ack))
    try:
        async with asyncio.timeout(limits.message_timeout_s):
            await connection.writer.drain()
    except TimeoutError:
        log.info("mllp peer did not read its ACK within %ss: closed", limits.message_timeout_s)
        return False
    return True


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


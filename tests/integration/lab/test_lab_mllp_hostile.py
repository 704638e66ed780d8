"""The analyser port under hostile input (issue 9, "The analyser port"): the
lab service with its MLLP listener on, fed an oversized message, a message
without its end block, binary garbage and 500 idle connections, stays ready
and keeps answering a well-formed message from an analyser; peers and senders
off the allow-lists get nothing in.

Limits come from the lab's settings (MLLP_*), set here small enough to be
reached in a test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid

import hl7
import httpx
import pytest
from yigongti_deploy.embedded import free_port
from yigongti_lab.mllp import MllpClient, frame, read_frame

IDLE_CONNECTIONS = 500
LIMITS = {
    "MLLP_MAX_MESSAGE_BYTES": "65536",
    "MLLP_MESSAGE_TIMEOUT_S": "1",
    "MLLP_IDLE_TIMEOUT_S": "120",
    "MLLP_MAX_CONNECTIONS_PER_PEER": "4",
    "MLLP_MAX_CONNECTIONS": "16",
}


def oru(*, sender: str = "BS-2000M^Mindray", pad: int = 0) -> bytes:
    """A well-formed ORU^R01 for a tube the lab does not know yet (it parks)."""
    control_id = f"MSG-{uuid.uuid4().hex[:10]}"
    barcode = f"B{uuid.uuid4().hex[:10]}"
    app, _, facility = sender.partition("^")
    return ("\r".join([
        f"MSH|^~\\&|{app}|{facility}|LIS|652325-L01|20240315103000||ORU^R01|{control_id}|P|"
        "2.3.1||||0||UNICODE UTF-8",
        f"OBR|1||{barcode}|^^^CHEM|||20240315102500",
        "OBX|1|NM|K^Potassium^L||4.52|mmol/l|3.50-5.30|N|||F|||20240315102900"
        + "x" * pad,
    ]) + "\r").encode()


def msa(ack: bytes) -> tuple[str, str, str]:
    segment = hl7.parse(ack.decode()).segment("MSA")
    return str(segment(1)), str(segment(2)), str(segment(3)) if len(segment) > 3 else ""


@pytest.fixture
def mllp(request, monkeypatch, dev_keys) -> int:
    """The lab's MLLP listener settings (before `lab` starts); its port.
    `@pytest.mark.parametrize("mllp", [{...}], indirect=True)` changes them."""
    port = free_port()
    env = {
        "MLLP_HOST": "127.0.0.1", "MLLP_PORT": str(port),
        "LIS_TERMINAL_ID": dev_keys.lis_terminal_id,
        "LIS_TERMINAL_KEY_FILE": str(dev_keys.lis_key_file),
        "LAB_CENTRE": dev_keys.lis_institution_id,
        **LIMITS, **getattr(request, "param", {}),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return port


async def ready(lab) -> int:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=lab.runtime.app),
                                 base_url="http://lab") as client:
        return (await client.get("/readyz")).status_code


async def answers_a_good_message(port: int, client: MllpClient | None = None) -> None:
    message = oru()
    if client is None:
        async with await MllpClient.connect("127.0.0.1", port) as fresh:
            ack = await fresh.send(message, timeout_s=20)
    else:
        ack = await client.send(message, timeout_s=20)
    assert msa(ack)[0] == "AA", ack


async def closed(reader: asyncio.StreamReader, timeout: float = 10.0) -> bool:  # noqa: ASYNC109
    """True when the server closed the connection (whatever it sent before)."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
        return True
    except ConnectionError:
        return True
    except TimeoutError:
        return False


async def test_an_oversized_message_is_refused_and_the_port_still_serves(mllp, lab):
    async with await MllpClient.connect("127.0.0.1", mllp) as analyser:
        ack = await analyser.send(oru(pad=200_000), timeout_s=20)
        code, _, text = msa(ack)
        assert code == "AR" and "larger than 65536" in text
        await answers_a_good_message(mllp, analyser)  # same connection, still in step
    assert await ready(lab) == 200


async def test_a_message_without_its_end_block_is_answered_and_its_connection_closed(
        mllp, lab):
    reader, writer = await asyncio.open_connection("127.0.0.1", mllp)
    message = oru()
    writer.write(b"\x0b" + message)  # no 0x1c 0x0d: the sender stalls, or was cut off
    await writer.drain()
    async with asyncio.timeout(10):
        ack = await read_frame(reader)
    code, control_id, text = msa(ack)
    assert code == "AR" and control_id in message.decode() and "end block" in text
    assert await closed(reader)
    writer.close()
    await answers_a_good_message(mllp)
    assert await ready(lab) == 200


async def test_binary_garbage_is_refused_or_cut_off_and_the_port_still_serves(mllp, lab):
    # Random bytes (start and end blocks among them: frames of garbage), then
    # bytes that never start a frame.
    reader, writer = await asyncio.open_connection("127.0.0.1", mllp)
    for _ in range(8):
        writer.write(os.urandom(32_768))
    writer.write(bytes(b for b in os.urandom(400_000) if b != 0x0B))
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    assert await closed(reader, timeout=15)  # not MLLP: the connection is cut
    writer.close()
    await answers_a_good_message(mllp)
    assert await ready(lab) == 200


async def test_500_idle_connections_neither_lock_out_the_analyser_nor_the_service(mllp, lab):
    async with await MllpClient.connect("127.0.0.1", mllp) as analyser:
        await answers_a_good_message(mllp, analyser)  # an analyser, connected and working
        idle = []
        for _ in range(IDLE_CONNECTIONS // 50):
            idle += await asyncio.gather(*(asyncio.open_connection("127.0.0.1", mllp)
                                           for _ in range(50)))
        # The port holds at most MLLP_MAX_CONNECTIONS_PER_PEER of one peer: the
        # idle newcomers push each other out, never the working analyser.
        still_open = [not await closed(r, timeout=0.2) for r, _ in idle]
        assert sum(still_open) <= 4
        await answers_a_good_message(mllp, analyser)
        await answers_a_good_message(mllp)
        assert await ready(lab) == 200
        for _, w in idle:
            w.close()


@pytest.mark.parametrize("mllp", [{"MLLP_ALLOWED_PEERS": "10.0.0.0/8,2001:db8::/32"}],
                         indirect=True)
async def test_a_peer_off_the_allow_list_is_disconnected_unanswered(mllp, lab):
    reader, writer = await asyncio.open_connection("127.0.0.1", mllp)
    writer.write(frame(oru()))
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""
    writer.close()
    assert await ready(lab) == 200


@pytest.mark.parametrize("mllp", [{"MLLP_ANALYSERS": "BS-2000M^Mindray,XN-1000"}],
                         indirect=True)
async def test_a_sender_off_the_analyser_list_is_refused(mllp, lab):
    async with await MllpClient.connect("127.0.0.1", mllp) as client:
        code, _, text = msa(await client.send(oru(sender="EVIL^Elsewhere"), timeout_s=20))
        assert code == "AR" and "MSH-3" in text
        assert msa(await client.send(oru(sender="XN-1000^SYSMEX"), timeout_s=20))[0] == "AA"
        assert msa(await client.send(oru(), timeout_s=20))[0] == "AA"

"""A record refused after it was parked is answered and can still come in:
its ce_id is not used up by the refusal (a resend after the prerequisite
arrived is applied), and a refusal naming more fields than IntakeRejected
holds is still answered, the run's good lines kept."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest_asyncio
from labflow import collected, order, payload, rejection_for
from labjourney import (
    fetchval,
    lis,
    one,
    ordered_tube,
    receive,
    until,
)
from yigongti_kit.timers import shift_clock
from yigongti_lab.hl7_results import ResultsTranslator
from yigongti_lab.mllp import send_mllp, start_mllp_server, stop_mllp_server


async def _expire_parked(lab, ce_id: str, grace: timedelta) -> dict:
    """Wait until `ce_id` is parked, let its grace period pass (and the clock
    come back), and return the refusal that answered it."""
    await until(lambda: fetchval(lab, "SELECT count(*) FROM parked WHERE ce_id = $1", ce_id),
                what="record parked")
    async with lab.pool.acquire() as conn:
        await shift_clock(conn, grace)
    [refused] = await lab.events.wait_for(rejection_for(ce_id))
    async with lab.pool.acquire() as conn:
        await shift_clock(conn, -grace)
    return payload(refused)


async def test_a_collection_refused_after_its_grace_period_is_applied_when_sent_again(
        lab, dev_keys):
    o = order(dev_keys.institution_id)
    tube = collected(o)
    ce_id = await lab.terminal.publish(tube)  # its order comes too late
    refused = await _expire_parked(lab, ce_id, timedelta(hours=3))
    assert refused["reason"] == "prerequisite_missing"

    await lab.terminal.publish(o)
    await one(lab, "order.accepted.v1", order_id=o.order_id)
    await lab.terminal.publish(tube, ce_id=ce_id)  # the terminal sends it again, same ce_id
    await one(lab, "specimen.collection_recorded.v1", barcode=tube.barcode)
    assert await fetchval(lab, "SELECT state FROM specimens WHERE barcode = $1",
                          tube.barcode) == "collected"


def _oru(control_id: str, barcode: str) -> bytes:
    return ("\r".join([
        f"MSH|^~\\&|BS-2000M|Mindray|LIS|652325-L01|20240315103000||ORU^R01|{control_id}|P|"
        "2.3.1||||0||UNICODE UTF-8",
        f"OBR|1||{barcode}|^^^CHEM|||20240315102500",
        "OBX|1|NM|K^Potassium^L||4.52|mmol/l|3.50-5.30|N|||F|||20240315102900",
    ]) + "\r").encode()


@pytest_asyncio.fixture
async def bridge(lab, dev_keys):
    """The MLLP listener publishing as the lab centre's LIS bridge terminal."""
    server = await start_mllp_server("127.0.0.1", 0, translator=ResultsTranslator(),
                                     publisher=lis(lab, dev_keys))
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        await stop_mllp_server(server)


async def test_hl7_results_refused_after_a_late_receipt_come_in_when_the_message_is_resent(
        lab, dev_keys, bridge):
    """The bridge derives the ce_id from the message: the same message sent
    again after the tube's receipt must be applied, not dropped as a copy."""
    o, t = await ordered_tube(lab, dev_keys, ("K",))
    message = _oru(f"MSG-{uuid.uuid4().hex[:8]}", t.barcode)
    ack = await send_mllp("127.0.0.1", bridge, message)
    assert b"MSA|AA|" in ack
    ce_id = await _wait_parked_ce_id(lab, t.barcode)
    refused = await _expire_parked(lab, ce_id, timedelta(hours=25))
    assert refused["reason"] == "prerequisite_missing"

    await receive(lab, dev_keys, t.barcode)  # the receipt, recorded late
    assert b"MSA|AA|" in await send_mllp("127.0.0.1", bridge, message)
    reported = await one(lab, "results.reported.v1", barcode=t.barcode)
    assert [x["code"] for x in reported["observations"]] == ["K"]


async def _wait_parked_ce_id(lab, barcode: str) -> str:
    await until(lambda: fetchval(lab, "SELECT count(*) FROM parked WHERE waiting_key = $1",
                                 barcode), what="results parked")
    return await fetchval(lab, "SELECT ce_id FROM parked WHERE waiting_key = $1", barcode)

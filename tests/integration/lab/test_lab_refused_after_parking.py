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
    GOOD,
    analyser_results,
    fetchval,
    is_,
    lis,
    new_patient,
    obs,
    one,
    ordered_tube,
    receive,
    technologist,
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


# --- more refused lines than IntakeRejected.fields holds (50) ----------------------

BAD_LINES = 60


def _run_with_bad_lines(barcode: str):
    """K and NA (ordered) with 60 lines of CL (not ordered)."""
    return analyser_results(barcode, obs("K", "4.1"), *(obs("CL", "101") for _ in range(BAD_LINES)),
                            obs("NA", "139"))


def _assert_cut_refusal(refused: dict, first: int = 1) -> None:
    assert refused["reason"] == "not_ordered"
    assert len(refused["fields"]) == 50
    assert refused["fields"][0] == {"field": f"observations.{first}.code", "code": "not_ordered"}


async def test_a_run_with_60_bad_lines_keeps_its_good_lines_and_is_answered(lab, dev_keys):
    o, t = await ordered_tube(lab, dev_keys, ("K", "NA"))
    await receive(lab, dev_keys, t.barcode)
    ce_id = await lis(lab, dev_keys).publish(_run_with_bad_lines(t.barcode))
    reported = await one(lab, "results.reported.v1", barcode=t.barcode)
    assert sorted(x["code"] for x in reported["observations"]) == ["K", "NA"]
    [refused] = await lab.events.wait_for(rejection_for(ce_id))
    _assert_cut_refusal(payload(refused))
    assert not lab.dlq.records


async def test_parked_runs_with_60_bad_lines_are_answered_when_the_receipt_releases_them(
        lab, dev_keys):
    """One run with good lines too, one with bad lines only: both waited for the
    receipt; the receipt answers 200 and each run is answered."""
    o, t = await ordered_tube(lab, dev_keys, ("K", "NA"), patient=new_patient())
    sender = lis(lab, dev_keys)
    mixed = await sender.publish(_run_with_bad_lines(t.barcode))
    only_bad = await sender.publish(analyser_results(
        t.barcode, *(obs("CL", "101") for _ in range(BAD_LINES)), analyser_id="AU5800-2"))
    await until(lambda: fetchval(lab, "SELECT count(*) = 2 FROM parked WHERE waiting_key = $1",
                                 t.barcode), what="both runs parked")
    async with technologist(lab, dev_keys) as staff:
        answer = await staff.post(f"/specimens/{t.barcode}/receipt", json={"inspection": GOOD})
    assert answer.status_code == 200, answer.text
    reported = await one(lab, "results.reported.v1", barcode=t.barcode)
    assert sorted(x["code"] for x in reported["observations"]) == ["K", "NA"]
    for ce_id, first in ((mixed, 1), (only_bad, 0)):
        [refused] = await lab.events.wait_for(rejection_for(ce_id))
        _assert_cut_refusal(payload(refused), first)
    assert not [r for r in lab.events.records if is_("results.reported.v1")(r)
                and payload(r)["analyser_id"] == "AU5800-2"]
    assert await fetchval(lab, "SELECT count(*) FROM parked WHERE expired_at IS NULL") == 0

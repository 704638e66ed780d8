"""Test support for the lab journey past receipt: results from the lab centre's
LIS terminal, staff steps over HTTP (receipt, confirm, verify, amend,
call-backs) with bearer tokens, and other clinics' terminals.

Built on labflow (records, EventLog); each step waits for the event that
proves it happened, so a test reads as the journey it drives."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import yaml
from labflow import ce_type, collected, new_patient, order, payload
from yigongti_contracts.lab.codes import TubeType
from yigongti_contracts.lab.parts import AnalyserObservation
from yigongti_contracts.lab.v1 import AnalyserResults, CriticalValueAck, SpecimenDispatched
from yigongti_kit.auth import issue_token
from yigongti_kit.intake_auth import TerminalSigner, load_terminals
from yigongti_kit.terminal import TerminalClient
from yigongti_lab import catalogue

LAB_CENTRE = "652325-L01"      # serves 652325-B01 (the demo terminal) and 652325-B02
OTHER_CLINIC = "652325-B02"    # another branch served by the same lab centre
OTHER_CENTRE = "652324-L01"    # another county's lab centre
GOOD = {"not_haemolysed": True, "not_lipaemic": True, "not_clotted": True,
        "volume_sufficient": True, "right_tube": True, "label_matches": True}
UNITS = {"K": "mmol/L", "NA": "mmol/L", "CL": "mmol/L", "CA": "mmol/L", "CTNI": "ng/L",
         "WBC": "10*9/L", "HGB": "g/L", "PLT": "10*9/L"}




def http(lab, dev_keys, institution: str = LAB_CENTRE, roles=("lab_technologist",),
         user: str = "tech-8") -> httpx.AsyncClient:
    token = issue_token(dev_keys.auth_private_pem, user=user, institution=institution,
                        roles=list(roles), audience="lab")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=lab.runtime.app),
                             base_url="http://lab", headers={"Authorization": f"Bearer {token}"})


def technologist(lab, dev_keys, institution: str = LAB_CENTRE) -> httpx.AsyncClient:
    return http(lab, dev_keys, institution, ("lab_technologist",), "tech-8")


def physician(lab, dev_keys, institution: str = LAB_CENTRE, user: str = "phys-2"):
    return http(lab, dev_keys, institution, ("lab_physician",), user)


def clinician(lab, dev_keys, institution: str | None = None) -> httpx.AsyncClient:
    return http(lab, dev_keys, institution or dev_keys.institution_id, ("clinician",), "doc-17")


def lis(lab, dev_keys) -> TerminalClient:
    """The lab centre's LIS bridge terminal (registered to 652325-L01 in dev keys)."""
    return TerminalClient(dev_keys.lis_signer(), lab.terminal.producer,
                          lab.topics["lab.intake.v1"])


async def register_terminal(lab, tmp_path: Path, institution: str,
                            terminal_id: str | None = None) -> TerminalClient:
    """A further terminal, registered to `institution` in the lab's registry."""
    signer = TerminalSigner.generate(terminal_id or f"t-{uuid.uuid4().hex[:8]}")
    path = tmp_path / f"{signer.terminal_id}.yaml"
    path.write_text(yaml.safe_dump({"terminals": [signer.registry_entry(institution)]}))
    async with lab.pool.acquire() as conn:
        assert await load_terminals(conn, path) == 1
    return TerminalClient(signer, lab.terminal.producer, lab.topics["lab.intake.v1"])


def obs(code: str, value: str | Decimal, unit: str | None = None) -> AnalyserObservation:
    return AnalyserObservation(code=code, value=Decimal(value), unit=unit or UNITS[code])


def analyser_results(barcode: str, *observations: AnalyserObservation,
                     analyser_id: str = "AU5800-1") -> AnalyserResults:
    return AnalyserResults(barcode=barcode, analyser_id=analyser_id, run_at=datetime.now(UTC),
                           observations=observations)


def dispatch(*barcodes: str) -> SpecimenDispatched:
    return SpecimenDispatched(
        shipment_id=f"SH-{uuid.uuid4().hex[:8]}", barcodes=barcodes, courier_id="courier-5",
        temperature_logger_id="logger-9", dispatched_at=datetime.now(UTC))


def ack(critical: dict, *, read_back: bool, by: str = "doc-17") -> CriticalValueAck:
    return CriticalValueAck(order_id=critical["order_id"], critical_id=critical["critical_id"],
                            received_by=by, read_back_confirmed=read_back,
                            acknowledged_at=datetime.now(UTC))


def is_(suffix: str, **fields):
    """Predicate: an event whose type ends with `suffix` and whose payload has `fields`."""
    return lambda r: ce_type(r).endswith(suffix) and all(
        payload(r).get(k) == v for k, v in fields.items())


async def one(lab, suffix: str, timeout: float = 20.0, **fields) -> dict:  # noqa: ASYNC109
    """The payload of the first event of that type with those fields."""
    [record, *_] = await lab.events.wait_for(is_(suffix, **fields), timeout=timeout)
    return payload(record)


def seen(lab, suffix: str, **fields) -> list[dict]:
    return [payload(r) for r in lab.events.records if is_(suffix, **fields)(r)]


async def until(check, timeout: float = 20.0, what: str = "condition") -> None:  # noqa: ASYNC109
    """Wait for an async or plain predicate to hold."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, f"{what} not reached"
        await asyncio.sleep(0.05)


async def feed_settled(lab) -> None:
    """Every event written so far is published, so it is in its clinic's feed
    (the relay fills the feed as it marks events sent)."""
    await until(lambda: fetchval(lab, "SELECT count(*) = 0 FROM outbox"
                                      " WHERE sent_at IS NULL AND refused_at IS NULL"),
                what="every event published")


async def fetchval(lab, sql: str, *args):
    async with lab.pool.acquire() as conn:
        return await conn.fetchval(sql, *args)


def price_of(test_code: str) -> Decimal:
    item = catalogue.price_item(test_code)
    return catalogue.price(item.item, "652325", datetime.now(UTC).year)


# --- the journey, step by step -------------------------------------------------


async def ordered_tube(lab, dev_keys, tests=("K", "NA", "CTNI"), *, patient: str | None = None,
                       tube=TubeType.serum_gold, terminal=None, **order_fields):
    """An accepted order whose tube (all of `tests`) is collected and dispatched."""
    o = order(dev_keys.institution_id, tests=tests, patient_ref=patient or new_patient(),
              **order_fields)
    t = collected(o, tests=tests, tube=tube)
    terminal = terminal or lab.terminal
    await terminal.publish(o)
    await terminal.publish(t)
    await terminal.publish(dispatch(t.barcode))
    await one(lab, "specimen.in_transit.v1", barcode=t.barcode)
    return o, t


async def receive(lab, dev_keys, barcode: str, inspection=None) -> dict:
    async with technologist(lab, dev_keys) as staff:
        answer = await staff.post(f"/specimens/{barcode}/receipt",
                                  json={"inspection": inspection or GOOD})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def report_results(lab, dev_keys, barcode: str, *observations) -> dict:
    """The LIS sends results; returns the LabResultsReported that answers them."""
    before = len(seen(lab, "results.reported.v1", barcode=barcode))
    await lis(lab, dev_keys).publish(analyser_results(barcode, *observations))
    found = await lab.events.wait_for(is_("results.reported.v1", barcode=barcode),
                                      count=before + 1)
    return payload(found[before])


async def confirm(lab, dev_keys, barcode: str) -> dict:
    async with technologist(lab, dev_keys) as staff:
        answer = await staff.post(f"/specimens/{barcode}/confirm")
    assert answer.status_code == 200, answer.text
    return answer.json()


async def verify(lab, dev_keys, order_id: str) -> dict:
    async with physician(lab, dev_keys) as doctor:
        answer = await doctor.post(f"/orders/{order_id}/verify")
    assert answer.status_code == 200, answer.text
    return answer.json()


async def verified_order(lab, dev_keys, tests=("K",), values=None, *,
                         patient: str | None = None):
    """An order carried through to its verified report; returns (order, tube)."""
    values = values or {"K": "4.2", "NA": "140", "CTNI": "5", "CL": "104"}
    o, t = await ordered_tube(lab, dev_keys, tests, patient=patient)
    await receive(lab, dev_keys, t.barcode)
    await report_results(lab, dev_keys, t.barcode, *(obs(c, values[c]) for c in tests))
    await confirm(lab, dev_keys, t.barcode)
    await verify(lab, dev_keys, o.order_id)
    await one(lab, "report.verified.v1", order_id=o.order_id)
    return o, t

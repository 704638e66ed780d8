"""The demo's patient at the insurance office and at the counter: enrolment
(the office and the face platform's sandbox), identification by face scan
when he walks in (step 1), and the one-stop settlement by face of the
township visit's charges (step 6: basic insurance, critical-illness
insurance, medical assistance)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from decimal import Decimal

from .demo_journey import NURSE, TOWNSHIP, Journey, StepFailed, ok
from .demo_lab import TOWNSHIP_TESTS

# The demo patient's face template (a feature vector; the sandbox alone keeps it)
# and a synthetic national ID (checksum valid, nobody's): only settlement sees it.
DEMO_FACE = [((i * 37) % 17 - 8) / 8 for i in range(64)]
DEMO_EC_INDEX = "EC-DEMO-0001"
PARTS = ("basic", "critical_illness", "large_amount_subsidy", "assistance", "out_of_pocket")


def _demo_id_number() -> str:
    from yigongti_contracts.patient_ref import check_character

    body = "65230119450301" + f"{uuid.uuid4().int % 500 * 2 + 1:03d}"
    return body + check_character(body)


def _counter(j: Journey):
    """The township's settlement counter: the dev terminal's own bearer token."""
    return j.http("settlement", j.keys.terminal_id, TOWNSHIP, ["settlement_terminal"])


async def enrol(j: Journey) -> None:
    """An 80-year-old on 低保 (low income), insured as a resident of 昌吉市,
    enrolled at the insurance office and at the face platform (before the
    journey: nothing of it is a step)."""
    async with j.http("settlement", "office-demo", TOWNSHIP, ["insurance_office"]) as office, \
            j.http("face", "-", TOWNSHIP, []) as sandbox:
        ok(await office.post("/office/persons", json={
            "id_number": _demo_id_number(), "scheme": "resident", "assistance": "low_income",
            "region": "652301", "ec_index_no": DEMO_EC_INDEX}), "enrol at the office")
        ok(await sandbox.post("/enrol", json={"ec_index_no": DEMO_EC_INDEX,
                                              "template": DEMO_FACE}), "enrol at the sandbox")


async def _face_token(j: Journey, visit_id: str, out_biz_no: str) -> dict:
    """The face platform's sandbox compares the probe and signs its result;
    settlement checks the signature and answers with a single-use token."""
    async with _counter(j) as counter, j.http("face", "-", TOWNSHIP, []) as sandbox:
        result = ok(await sandbox.post("/compare", json={
            "ec_index_no": DEMO_EC_INDEX, "probe": [x * 0.98 for x in DEMO_FACE],
            "liveness": 0.97, "terminal_id": j.keys.terminal_id}), "face compare")
        return ok(await counter.post("/identity/verify", json={
            "out_biz_no": out_biz_no, "visit_id": visit_id, "credential_type": "face",
            "credential": result}), "identity by face")


async def identify(j: Journey) -> None:
    """Step 1: the township identifies the walking-in patient by face scan."""
    visit_id = f"VIS-{uuid.uuid4().hex[:10]}"
    answer = await _face_token(j, visit_id, f"ID{uuid.uuid4().hex[:12]}")
    verified = await j.events.one("identity.verified.v1", visit_id=visit_id)
    j.facts.update(visit_id=visit_id, patient_ref=answer["patient_ref"],
                   first_medical_contact_at=datetime.fromisoformat(verified["verified_at"]))
    j.did(f"nurse {NURSE}", TOWNSHIP, "identified the walk-in patient (80, chest "
                   "pain for 40 min) by face scan; his patient_ref came back, no ID number "
                   "typed", "identity.verified.v1")


async def settle(j: Journey) -> dict:
    """Step 6: the township visit's charges (ECG reading, lab tests), posted by
    the services through Kafka, settled in one stop by face scan."""
    visit_id = j.facts["visit_id"]
    # Every charge of the visit posted: the ECG's reading fee and each lab test's.
    charges = [*await j.events.wait("diagnosis.charges.posted.v1", visit_id=visit_id),
               *await j.events.wait("lab.charges.posted.v1", count=len(TOWNSHIP_TESTS),
                                    visit_id=visit_id)]
    expected = sum(Decimal(c["amount"]) for c in charges)
    await j.events.read_by("settlement", ("lab", "diagnosis"))
    out_biz_no = f"DEMO{uuid.uuid4().hex[:12]}"
    verified = await _face_token(j, visit_id, out_biz_no)
    async with _counter(j) as counter:
        for _ in range(100):  # the charges reach settlement through Kafka
            answer = await counter.post("/settlements", json={
                "out_biz_no": out_biz_no, "visit_id": visit_id, "setting": "outpatient",
                "posted_charges": True, "settlement_token": verified["settlement_token"]})
            if answer.status_code != 422:
                break
            await asyncio.sleep(0.1)
        done = ok(answer, "settlement")
    completed = await j.events.one("settlement.completed.v1", visit_id=visit_id)
    total = Decimal(completed["total"])
    if sum(Decimal(completed[p]) for p in PARTS) != total:
        raise StepFailed("the breakdown's parts do not add up to the total")
    if total != expected:
        raise StepFailed(f"settled {total} yuan of the visit's {expected} posted")
    j.facts["settlement"] = {**done, **completed, "explanation": done.get("explanation", "")}
    j.facts["out_biz_no"] = out_biz_no
    j.did(f"nurse {NURSE}", TOWNSHIP, f"settled the visit by face scan: {total} yuan, "
                   f"the patient pays {completed['out_of_pocket']}",
                   "settlement.completed.v1")
    return completed


def breakdown(settlement: dict) -> list[str]:
    """The three payers' breakdown as the patient reads it."""
    lines = [f"settlement {settlement['settlement_id']} ({settlement['scheme']} scheme, "
             f"assistance {settlement['assistance_category']}, policy "
             f"{settlement['policy_version']}):",
             f"  total                     {settlement['total']:>10} yuan",
             f"  basic insurance           {settlement['basic']:>10}",
             f"  critical-illness ins.     {settlement['critical_illness']:>10}",
             f"  large-amount subsidy      {settlement['large_amount_subsidy']:>10}",
             f"  medical assistance        {settlement['assistance']:>10}",
             f"  the patient pays          {settlement['out_of_pocket']:>10}"]
    if settlement.get("explanation"):
        lines.append("what he reads:")
        lines += [f"  {line}" for line in settlement["explanation"].splitlines()]
    return lines

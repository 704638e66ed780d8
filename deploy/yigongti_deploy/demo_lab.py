"""The demo's lab (DESIGN §3 step 5): the township places a STAT order —
troponin, electrolytes, CBC, HbA1c — and records and dispatches the two tubes;
at the county lab centre the technologist receives them over HTTP, the
analysers send HL7 v2 ORU^R01 over MLLP, the technologist confirms, which
raises the critical troponin and potassium; the clinic acknowledges them with
read-back; the lab physician verifies. At the county the repeat troponin is
ordered with the override "the value changes fast" and accepted, while the
HbA1c, a recognised result, is not repeated (DuplicateTestAvoided)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from yigongti_contracts.common import Age, AgeUnit, Sex
from yigongti_contracts.lab.codes import OverrideReason, Priority, TubeType
from yigongti_contracts.lab.parts import OrderedTest
from yigongti_contracts.lab.v1 import (
    CriticalValueAck,
    LabOrderPlaced,
    SpecimenCollected,
    SpecimenDispatched,
)
from yigongti_lab.mllp import send_mllp

from .demo_journey import (
    CARDIOLOGIST,
    COUNTY,
    LAB_CENTRE,
    LAB_PHYSICIAN,
    NURSE,
    TECHNOLOGIST,
    TOWNSHIP,
    TOWNSHIP_DOCTOR,
    Journey,
    StepFailed,
    ok,
)

CHINA = timezone(timedelta(hours=8))
TOWNSHIP_TESTS = ("CTNI", "K", "NA", "CBC", "HBA1C")
INSPECTED_OK = {"not_haemolysed": True, "not_lipaemic": True, "not_clotted": True,
                "volume_sufficient": True, "right_tube": True, "label_matches": True}
BOX_LOG = {"logger_id": "box-17", "min_celsius": "3.1", "max_celsius": "6.4",
           "minutes_outside_band": 0}


def _oru(barcode: str, lines: list[tuple[str, str, str]], control_id: str) -> bytes:
    """An analyser's HL7 v2.5 ORU^R01 for one tube (times in China Standard Time)."""
    now = datetime.now(UTC).astimezone(CHINA).strftime("%Y%m%d%H%M%S")
    segments = [
        f"MSH|^~\\&|BS-2000M|Mindray|LIS|{LAB_CENTRE}|{now}||ORU^R01|{control_id}|P|2.5|||||"
        "|UNICODE UTF-8",
        f"OBR|1||{barcode}|^^^LAB|R||{now}",
    ]
    for i, (code, value, unit) in enumerate(lines, 1):
        segments.append(f"OBX|{i}|NM|{code}^^99MRC||{value}|{unit}||||||F|||{now}")
    return ("\r".join(segments) + "\r").encode()


def _ack_code(ack: bytes) -> str:
    for segment in ack.decode(errors="replace").split("\r"):
        if segment.startswith("MSA|"):
            return segment.split("|")[1]
    return "?"


async def township_sample(j: Journey) -> None:
    """Step 5, at the township and the lab centre: the order to its verified report."""
    now = datetime.now(UTC)
    order = LabOrderPlaced(
        order_id=f"LO-{uuid.uuid4().hex[:10]}", visit_id=j.facts["visit_id"],
        patient_ref=j.facts["patient_ref"], sex=Sex.male, age=Age(value=80, unit=AgeUnit.years),
        ordering_institution=TOWNSHIP, ordering_clinician=TOWNSHIP_DOCTOR, priority=Priority.stat,
        tests=tuple(OrderedTest(code=c) for c in TOWNSHIP_TESTS), ordered_at=now)
    serum = SpecimenCollected(barcode=f"QR{uuid.uuid4().hex[:10].upper()}",
                              order_id=order.order_id, tests=("CTNI", "K", "NA"),
                              tube=TubeType.serum_gold, collected_at=now, collector_id=NURSE)
    edta = SpecimenCollected(barcode=f"QR{uuid.uuid4().hex[:10].upper()}",
                             order_id=order.order_id, tests=("CBC", "HBA1C"),
                             tube=TubeType.edta_k2, collected_at=now, collector_id=NURSE)
    tubes = (serum, edta)
    analyser = {
        serum.barcode: [("hsTnI", "850", "ng/L"), ("K", "6.8", "mmol/L"), ("Na", "138", "mmol/L")],
        edta.barcode: [("WBC", "11.2", "10*9/L"), ("HGB", "128", "g/L"), ("PLT", "210", "10*9/L"),
                       ("HbA1c", "6.1", "%")],
    }
    j.facts["lab_order"] = order.order_id
    clinic = j.terminal("lab")
    await clinic.publish(order)
    await j.events.one("order.accepted.v1", order_id=order.order_id)
    j.did(f"doctor {TOWNSHIP_DOCTOR}", TOWNSHIP, "ordered STAT troponin, electrolytes, CBC "
          "and HbA1c", "order.accepted.v1")
    for tube in tubes:
        await clinic.publish(tube)
    await j.events.wait("collection_recorded.v1", count=2, order_id=order.order_id)
    j.did(f"nurse {NURSE}", TOWNSHIP, "drew blood into a serum tube and an EDTA tube",
          "collection_recorded.v1")
    await clinic.publish(SpecimenDispatched(
        shipment_id=f"SH-{uuid.uuid4().hex[:8]}", barcodes=tuple(t.barcode for t in tubes),
        courier_id="courier-changji-1", temperature_logger_id="box-17", dispatched_at=now))
    await j.events.wait("specimen.in_transit.v1", count=2, order_id=order.order_id)
    j.did(f"nurse {NURSE}", TOWNSHIP, "dispatched both tubes in the cold box",
          "specimen.in_transit.v1")

    async with j.http("lab", TECHNOLOGIST, LAB_CENTRE, ["lab_technologist"]) as tech, \
            j.http("lab", LAB_PHYSICIAN, LAB_CENTRE, ["lab_physician"]) as physician:
        for tube in tubes:
            ok(await tech.post(f"/specimens/{tube.barcode}/receipt",
                               json={"inspection": INSPECTED_OK, "logger": BOX_LOG}), "receipt")
        await j.events.wait("specimen.received.v1", count=2, order_id=order.order_id)
        j.did(f"technologist {TECHNOLOGIST}", LAB_CENTRE, "received and inspected both tubes "
              "(cold chain kept)", "specimen.received.v1")
        for i, tube in enumerate(tubes):
            ack = await send_mllp("127.0.0.1", j.stack.mllp_port,
                                  _oru(tube.barcode, analyser[tube.barcode],
                                       f"{order.order_id[-6:]}{i}"))
            if _ack_code(ack) != "AA":
                raise StepFailed(f"the analyser's message was answered {_ack_code(ack)}")
        await j.events.wait("results.reported.v1", count=2, order_id=order.order_id)
        j.did("analysers", LAB_CENTRE, "sent the results as HL7 v2 ORU^R01 over MLLP (ACK AA)",
              "results.reported.v1")
        for tube in tubes:
            ok(await tech.post(f"/specimens/{tube.barcode}/confirm"), "confirm")
        raised = await j.events.wait("critical_value.raised.v1", count=2, order_id=order.order_id)
        criticals = ", ".join(f"{c['test_code']} {c['value']} {c['unit']}" for c in raised)
        j.did(f"technologist {TECHNOLOGIST}", LAB_CENTRE, f"confirmed the results; critical "
              f"values raised: {criticals}", "critical_value.raised.v1")
        for critical in raised:
            await clinic.publish(CriticalValueAck(
                order_id=order.order_id, critical_id=critical["critical_id"],
                received_by=TOWNSHIP_DOCTOR, read_back_confirmed=True,
                acknowledged_at=datetime.now(UTC)))
        await j.events.wait("critical_value.acknowledged.v1", count=2, order_id=order.order_id)
        j.did(f"doctor {TOWNSHIP_DOCTOR}", TOWNSHIP, "acknowledged both critical values, "
              "reading each back", "critical_value.acknowledged.v1")
        ok(await physician.post(f"/orders/{order.order_id}/verify"), "verify")
    verified = await j.events.one("report.verified.v1", order_id=order.order_id)
    recognised = sorted({r["code"] for r in verified["recognitions"]})
    j.did(f"lab physician {LAB_PHYSICIAN}", LAB_CENTRE, "verified the report; the clinic reads "
          f"it now; recognised results: {', '.join(recognised)}", "report.verified.v1")
    if "HBA1C" not in recognised:
        raise StepFailed("the HbA1c result was not recognised")


async def county_repeat(j: Journey) -> None:
    """Step 5, at the county: troponin repeated with its override; HbA1c not."""
    order = LabOrderPlaced(
        order_id=f"LO-{uuid.uuid4().hex[:10]}", visit_id=f"VIS-{uuid.uuid4().hex[:10]}",
        patient_ref=j.facts["patient_ref"], sex=Sex.male, age=Age(value=80, unit=AgeUnit.years),
        ordering_institution=COUNTY, ordering_clinician=CARDIOLOGIST, priority=Priority.stat,
        tests=(OrderedTest(code="CTNI", override_reason=OverrideReason.rapidly_changing),
               OrderedTest(code="HBA1C")),
        ordered_at=datetime.now(UTC))
    j.facts["county_order"] = order.order_id
    await j.terminal("lab", county=True).publish(order)
    accepted = await j.events.one("order.accepted.v1", order_id=order.order_id)
    if accepted["tests"] != ["CTNI"] or accepted["avoided_tests"] != ["HBA1C"]:
        raise StepFailed(f"the county's order was accepted with {accepted['tests']}, "
                         f"avoiding {accepted['avoided_tests']}")
    j.did(f"cardiologist {CARDIOLOGIST}", COUNTY, "ordered troponin again with the override "
          "\"the value changes fast\" (acute MI): accepted", "order.accepted.v1")
    avoided = await j.events.one("duplicate_avoided.v1", order_id=order.order_id)
    j.did("lab service", COUNTY, f"answered the HbA1c with the township's recognised result "
          f"(verified by {avoided['recognised'].get('performed_by', LAB_CENTRE)}): not repeated, "
          "not charged", "duplicate_avoided.v1")

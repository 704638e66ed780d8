"""`make demo`: the lab part of the reference journey (DESIGN §3 step 5) on
the embedded stack.

A township branch's terminal (奇台县总医院乔仁乡分院) places a STAT order for an
80-year-old man with chest pain — troponin, electrolytes, CBC — and records and
dispatches the two tubes. At the county lab centre a technologist receives and
inspects them over HTTP; the analysers send HL7 v2 ORU^R01 over MLLP; the
technologist confirms, which raises the critical troponin and potassium (the
clinic is told these at once); the clinic acknowledges with read-back from its
terminal; the lab physician verifies, and only then does the clinic see the
other results: until verification its feed shows the tubes as being tested.
The clinic reads the report and its feed. Then the ECG step (demo_ecg.py):
a SYNTHETIC 12-lead ECG uploaded, read at the county ECG centre and signed as
a STEMI critical finding, which the clinic acknowledges with read-back. The
demo prints every event as a timeline and exits non-zero if the expected
events do not arrive.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from opentelemetry import propagate, trace
from yigongti_contracts.common import Age, AgeUnit, Sex
from yigongti_contracts.lab.codes import Priority, TubeType
from yigongti_contracts.lab.parts import OrderedTest
from yigongti_contracts.lab.v1 import (
    CriticalValueAck,
    LabOrderPlaced,
    SpecimenCollected,
    SpecimenDispatched,
)
from yigongti_kit.auth import issue_token
from yigongti_kit.settings import KitSettings, kafka_client_kwargs
from yigongti_kit.telemetry import setup_telemetry
from yigongti_kit.terminal import TerminalClient
from yigongti_lab.mllp import send_mllp

from .stack import Stack

DEADLINE_S = 30.0
CHINA = timezone(timedelta(hours=8))
# A synthetic pseudonymous patient_ref: the demo never handles a national ID.
DEMO_PATIENT = "v1:" + "5e" * 32


def _kafka_kwargs(stack: Stack, role: str) -> dict:
    settings = KitSettings(service_name="demo", kafka_bootstrap_servers=stack.bootstrap,
                           kafka_broker_kind=stack.broker_kind)
    return kafka_client_kwargs(settings, role)


async def _events_reader(stack: Stack, topic: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(**{**_kafka_kwargs(stack, "consumer"), "group_id": None})
    await consumer.start()
    partitions = consumer.partitions_for_topic(topic)
    while not partitions:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer


class Timeline:
    """Reads lab.events.v1 and prints the journey's events as they arrive."""

    def __init__(self, reader: AIOKafkaConsumer, order_id: str, started: float) -> None:
        self.reader = reader
        self.order_id = order_id
        self.started = started
        self.seen: list[tuple[str, dict]] = []
        self.trace_ids: list[tuple[str, str]] = []  # (ce_type, trace id of its traceparent)

    def say(self, text: str) -> None:
        print(f"[{_ms(self.started):8.1f} ms] {text}", flush=True)

    async def wait_for(self, suffix: str, count: int = 1) -> list[dict]:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            found = [body for t, body in self.seen if t.endswith(suffix)]
            if len(found) >= count:
                return found
            rejected = [body for t, body in self.seen if t.endswith("intake.rejected.v1")]
            if rejected:
                raise RuntimeError(f"intake rejected: {rejected[0]['reason']}")
            for records in (await self.reader.getmany(timeout_ms=50)).values():
                for r in records:
                    body = json.loads(r.value)
                    if self.order_id not in (body.get("order_id"), body.get("key")):
                        continue
                    headers = dict(r.headers)
                    ce_type = headers["ce_type"].decode()
                    self.seen.append((ce_type, body))
                    parent = headers.get("traceparent", b"").decode()
                    self.trace_ids.append((ce_type, parent.split("-")[1] if parent else "-"))
                    self.say(f"lab → {ce_type.removeprefix('yigongti.lab.')} "
                             f"(ce_aggseq {headers.get('ce_aggseq', b'-').decode()})"
                             + _detail(body))
        raise TimeoutError(f"no {suffix} within {DEADLINE_S:.0f} s")


def _detail(body: dict) -> str:
    if "reason" in body:
        return f" reason={body['reason']}"
    if "direction" in body:
        return f" {body['test_code']} {body.get('value')} {body.get('unit')} ({body['direction']})"
    if "observations" in body:
        flags = ", ".join(f"{o['code']}={o.get('value') or o.get('coded_value')} {o['flag']}"
                          for o in body["observations"])
        return f" [{flags}]"
    return ""


def _oru(barcode: str, lines: list[tuple[str, str, str]], control_id: str) -> bytes:
    """An analyser's HL7 v2.5 ORU^R01 for one tube (times in China Standard Time)."""
    now = datetime.now(UTC).astimezone(CHINA).strftime("%Y%m%d%H%M%S")
    segments = [
        f"MSH|^~\\&|BS-2000M|Mindray|LIS|652325-L01|{now}||ORU^R01|{control_id}|P|2.5|||||"
        "|UNICODE UTF-8",
        f"OBR|1||{barcode}|^^^LAB|R||{now}",
    ]
    for i, (code, value, unit) in enumerate(lines, 1):
        segments.append(f"OBX|{i}|NM|{code}^^99MRC||{value}|{unit}||||||F|||{now}")
    return ("\r".join(segments) + "\r").encode()


async def run_journey(stack: Stack) -> int:
    assert stack.keys is not None and stack.mllp_port is not None
    keys = stack.keys
    institution = keys.institution_id
    now = datetime.now(UTC)
    order = LabOrderPlaced(
        order_id=f"LO-{uuid.uuid4().hex[:10]}",
        visit_id=f"VIS-{uuid.uuid4().hex[:8]}",
        patient_ref=DEMO_PATIENT,
        sex=Sex.male,
        age=Age(value=80, unit=AgeUnit.years),
        ordering_institution=institution,
        ordering_clinician="qiaoren-doc-01",
        priority=Priority.stat,
        tests=tuple(OrderedTest(code=c) for c in ("CTNI", "K", "NA", "CBC")),
        ordered_at=now,
    )
    serum = SpecimenCollected(barcode=f"QR{uuid.uuid4().hex[:10].upper()}",
                              order_id=order.order_id, tests=("CTNI", "K", "NA"),
                              tube=TubeType.serum_gold, collected_at=now,
                              collector_id="qiaoren-nurse-02")
    edta = SpecimenCollected(barcode=f"QR{uuid.uuid4().hex[:10].upper()}",
                             order_id=order.order_id, tests=("CBC",), tube=TubeType.edta_k2,
                             collected_at=now, collector_id="qiaoren-nurse-02")
    tubes = (serum, edta)
    dispatch = SpecimenDispatched(shipment_id=f"SH-{uuid.uuid4().hex[:8]}",
                                  barcodes=tuple(t.barcode for t in tubes),
                                  courier_id="courier-qitai-1", temperature_logger_id="box-17",
                                  dispatched_at=now)
    analyser_lines = {
        serum.barcode: [("hsTnI", "850", "ng/L"), ("K", "6.8", "mmol/L"), ("Na", "138", "mmol/L")],
        edta.barcode: [("WBC", "11.2", "10*9/L"), ("HGB", "128", "g/L"), ("PLT", "210", "10*9/L")],
    }

    reader = await _events_reader(stack, stack.topic("lab.events.v1"))
    producer = AIOKafkaProducer(**_kafka_kwargs(stack, "producer"))
    await producer.start()
    clinic = TerminalClient(keys.signer(), producer, stack.topic("lab.intake.v1"))
    lab_url = stack.services["lab"].url
    timeline = Timeline(reader, order.order_id, time.monotonic())
    try:
        with trace.get_tracer("yigongti.demo").start_as_current_span("demo journey") as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            timeline.say(f"clinic terminal → LabOrderPlaced {order.order_id} (STAT: "
                         f"{', '.join(t.code for t in order.tests)})")
            await clinic.publish(order)
            for tube in tubes:
                timeline.say(f"clinic terminal → SpecimenCollected {tube.barcode} "
                             f"({tube.tube.value}: {', '.join(tube.tests)})")
                await clinic.publish(tube)
            timeline.say(f"clinic terminal → SpecimenDispatched {dispatch.shipment_id}")
            await clinic.publish(dispatch)
            await timeline.wait_for("specimen.in_transit.v1", count=2)

            tech = _client(lab_url, keys, "tech-qitai-01", "652325-L01", "lab_technologist")
            physician = _client(lab_url, keys, "phys-qitai-01", "652325-L01", "lab_physician")
            async with tech, physician:
                for tube in tubes:
                    answer = await tech.post(f"/specimens/{tube.barcode}/receipt",
                                             json={"inspection": INSPECTED_OK,
                                                   "logger": BOX_LOG})
                    timeline.say(f"technologist receives {tube.barcode}: HTTP "
                                 f"{answer.status_code} {answer.json().get('state')}")
                await timeline.wait_for("specimen.received.v1", count=2)
                for i, tube in enumerate(tubes):
                    ack = await send_mllp("127.0.0.1", stack.mllp_port,
                                          _oru(tube.barcode, analyser_lines[tube.barcode],
                                               f"{order.order_id[-6:]}{i}"))
                    timeline.say(f"analyser → HL7 ORU^R01 {tube.barcode} over MLLP: ACK "
                                 f"{_ack_code(ack)}")
                await timeline.wait_for("results.reported.v1", count=2)
                for tube in tubes:
                    answer = await tech.post(f"/specimens/{tube.barcode}/confirm")
                    timeline.say(f"technologist confirms {tube.barcode}: HTTP "
                                 f"{answer.status_code}")
                raised = await timeline.wait_for("critical_value.raised.v1", count=2)
                for critical in raised:
                    timeline.say(f"clinic terminal → CriticalValueAck {critical['critical_id']} "
                                 "(read back)")
                    await clinic.publish(CriticalValueAck(
                        order_id=order.order_id, critical_id=critical["critical_id"],
                        received_by="qiaoren-doc-01", read_back_confirmed=True,
                        acknowledged_at=datetime.now(UTC)))
                await timeline.wait_for("critical_value.acknowledged.v1", count=2)
                answer = await physician.post(f"/orders/{order.order_id}/verify")
                timeline.say(f"lab physician verifies the report: HTTP {answer.status_code}")
                await timeline.wait_for("report.verified.v1")
                await timeline.wait_for("charges.posted.v1", count=4)
        report = await _read_report(stack, order.order_id, institution)
    except (TimeoutError, RuntimeError) as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        await producer.stop()
        await reader.stop()

    print(f"\nthe report of {order.order_id} as the clinic reads it over HTTP "
          f"(HTTP {report['status']}):")
    for obs in report["body"].get("observations", []):
        print(f"  {obs['code']:<5} {obs['value'] or obs['coded_value']:>6} {obs['unit'] or '':<8}"
              f" ref {obs['reference_low'] or ''}–{obs['reference_high'] or ''}  {obs['flag']}"
              f"{'  CRITICAL' if obs['critical'] else ''}  verified by {obs['verified_by']}")
    kinds = Counter(e["resource"]["resourceType"] for e in report["fhir"].get("entry", []))
    status = next((e["resource"]["status"] for e in report["fhir"].get("entry", [])
                   if e["resource"]["resourceType"] == "DiagnosticReport"), "missing")
    print(f"as HL7 FHIR R4 (GET /orders/{order.order_id}/fhir, HTTP {report['fhir_status']}): "
          f"a Bundle of {', '.join(f'{n} {kind}' for kind, n in sorted(kinds.items()))}; "
          f"the DiagnosticReport is {status}")
    kinds = Counter(".".join(i["type"].split(".")[2:-1]) for i in report["feed"]
                    if i["order_id"] == order.order_id)
    print(f"the clinic's feed (GET /feed) holds {sum(kinds.values())} items of the order: "
          + ", ".join(f"{kind} ×{n}" if n > 1 else kind for kind, n in kinds.items())
          + " (results only with the verified report; before it, the tubes show as "
            "in testing and only the critical values are told)")
    own = [t for t, tid in timeline.trace_ids if tid != trace_id]
    print(f"trace id {trace_id}: carried by {len(timeline.trace_ids) - len(own)} of the "
          f"{len(timeline.trace_ids)} events (export spans with OTEL_EXPORTER_OTLP_ENDPOINT)"
          + (f"; {len(own)} start a trace of their own where the analyser's HL7 message "
             "enters (HL7 v2 carries no trace context)" if own else ""))
    print(f"\nOK: the lab journey completed in {_ms(timeline.started):.0f} ms, "
          f"{len(timeline.seen)} events")
    return 0


INSPECTED_OK = {"not_haemolysed": True, "not_lipaemic": True, "not_clotted": True,
                "volume_sufficient": True, "right_tube": True, "label_matches": True}
BOX_LOG = {"logger_id": "box-17", "min_celsius": "3.1", "max_celsius": "6.4",
           "minutes_outside_band": 0}


def _ack_code(ack: bytes) -> str:
    for segment in ack.decode(errors="replace").split("\r"):
        if segment.startswith("MSA|"):
            return segment.split("|")[1]
    return "?"


def _client(base_url: str, keys, user: str, institution: str, role: str) -> httpx.AsyncClient:
    token = issue_token(keys.auth_private_pem, user=user, institution=institution,
                        roles=[role], audience="lab")
    return httpx.AsyncClient(base_url=base_url, timeout=10,
                             headers={"Authorization": f"Bearer {token}"},
                             event_hooks={"request": [_carry_trace]})


async def _carry_trace(request: httpx.Request) -> None:
    """The staff's HTTP calls continue the journey's trace (W3C traceparent)."""
    propagate.inject(request.headers)


async def _read_report(stack: Stack, order_id: str, institution: str) -> dict:
    assert stack.keys is not None
    token = issue_token(stack.keys.auth_private_pem, user="qiaoren-doc-01",
                        institution=institution, roles=["clinician"], audience="lab")
    async with httpx.AsyncClient(base_url=stack.services["lab"].url, timeout=10) as client:
        headers = {"Authorization": f"Bearer {token}"}
        response = await client.get(f"/orders/{order_id}/report", headers=headers)
        as_fhir = await client.get(f"/orders/{order_id}/fhir", headers=headers)
        feed = await client.get("/feed", params={"limit": 500, "wait": 2}, headers=headers)
        return {"status": response.status_code, "body": response.json(),
                "fhir_status": as_fhir.status_code, "fhir": as_fhir.json(),
                "feed": feed.json().get("items", [])}


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


async def _main() -> int:
    setup_telemetry("demo")  # a real trace id, carried into every event of the journey
    stack = Stack(services=["lab", "diagnosis"])
    print("starting the embedded stack …", flush=True)
    await stack.start()
    try:
        print(stack.describe())
        code = await run_journey(stack)
        return code or await _ecg_step(stack)
    except Exception as exc:  # noqa: BLE001 - a demo reports, then exits non-zero
        print(f"FAILED: {exc!r}", file=sys.stderr)
        for name, service in stack.services.items():
            print(f"--- {name} log ---\n{service.log_tail()}", file=sys.stderr)
        return 1
    finally:
        await stack.stop()


async def _ecg_step(stack: Stack) -> int:
    """The ECG step (demo_ecg.py) with a terminal and a reader of the events."""
    from .demo_ecg import run_ecg_step

    topic = stack.topic("diagnosis.events.v1")
    reader = await _events_reader(stack, topic)
    producer = AIOKafkaProducer(**_kafka_kwargs(stack, "producer"))
    await producer.start()
    try:
        terminal = TerminalClient(stack.keys.signer(), producer,
                                  stack.topic("diagnosis.intake.v1"))
        return await run_ecg_step(stack, terminal, reader, topic)
    finally:
        await producer.stop()
        await reader.stop()


def main(argv: list[str] | None = None) -> None:
    import argparse

    argparse.ArgumentParser(
        prog="yigongti-demo",
        description="Starts the one-machine stack, plays the lab journey of the reference "
        "scenario and prints its timeline; exits non-zero if an expected event does not "
        "arrive.").parse_args(argv)
    raise SystemExit(asyncio.run(_main()))


if __name__ == "__main__":
    main()

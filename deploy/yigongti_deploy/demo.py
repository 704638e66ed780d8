"""`make demo`: the lab slice of the reference journey (DESIGN §3 step 5) on the
embedded stack.

A township branch's terminal (奇台县总医院乔仁乡分院) places a STAT order for an
80-year-old man with chest pain — troponin, electrolytes, CBC — and records the
two tubes it collected. The lab service validates, stores and answers through
its outbox. The demo prints the events as a timeline, reads the order back over
authenticated HTTP as the clinic's clinician, and exits non-zero if the
expected events do not arrive in time.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from datetime import UTC, datetime

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from opentelemetry import trace
from yigongti_contracts.common import Age, AgeUnit, Sex
from yigongti_contracts.lab.codes import Priority, TubeType
from yigongti_contracts.lab.parts import OrderedTest
from yigongti_contracts.lab.v1 import LabOrderPlaced, SpecimenCollected
from yigongti_kit.auth import issue_token
from yigongti_kit.settings import KitSettings, kafka_client_kwargs
from yigongti_kit.telemetry import setup_telemetry
from yigongti_kit.terminal import TerminalClient

from .stack import Stack

DEADLINE_S = 30.0
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


async def run_journey(stack: Stack) -> int:
    assert stack.keys is not None
    institution = stack.keys.institution_id
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
    tubes = [
        SpecimenCollected(barcode=f"QR{uuid.uuid4().hex[:10].upper()}", order_id=order.order_id,
                          tests=("CTNI", "K", "NA"), tube=TubeType.serum_gold,
                          collected_at=now, collector_id="qiaoren-nurse-02"),
        SpecimenCollected(barcode=f"QR{uuid.uuid4().hex[:10].upper()}", order_id=order.order_id,
                          tests=("CBC",), tube=TubeType.edta_k2,
                          collected_at=now, collector_id="qiaoren-nurse-02"),
    ]
    expected = {"yigongti.lab.order.accepted.v1": 1,
                "yigongti.lab.specimen.collection_recorded.v1": len(tubes)}

    reader = await _events_reader(stack, stack.topic("lab.events.v1"))
    producer = AIOKafkaProducer(**_kafka_kwargs(stack, "producer"))
    await producer.start()
    terminal = TerminalClient(stack.keys.signer(), producer, stack.topic("lab.intake.v1"))
    started = time.monotonic()
    try:
        with trace.get_tracer("yigongti.demo").start_as_current_span("demo journey") as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            print(f"\n[{0:7.1f} ms] terminal {stack.keys.terminal_id} → LabOrderPlaced "
                  f"{order.order_id} (STAT: {', '.join(t.code for t in order.tests)})")
            await terminal.publish(order)
            for tube in tubes:
                print(f"[{_ms(started):7.1f} ms] terminal → SpecimenCollected {tube.barcode} "
                      f"({tube.tube.value}: {', '.join(tube.tests)})")
                await terminal.publish(tube)
        seen: dict[str, int] = {}
        rejected = []
        while time.monotonic() - started < DEADLINE_S and seen != expected and not rejected:
            batches = await reader.getmany(timeout_ms=100)
            for records in batches.values():
                for r in records:
                    body = json.loads(r.value)
                    if body.get("order_id") != order.order_id and body.get("key") != order.order_id:
                        continue
                    ce_type = dict(r.headers)["ce_type"].decode()
                    seq = dict(r.headers).get("ce_sequence", b"-").decode()
                    print(f"[{_ms(started):7.1f} ms] lab → {ce_type} (ce_sequence {seq})"
                          + (f" reason={body['reason']}" if "reason" in body else ""))
                    if ce_type.endswith("intake.rejected.v1"):
                        rejected.append(body)
                    seen[ce_type] = seen.get(ce_type, 0) + 1
        ok = seen == expected
        report = await _read_order(stack, order.order_id, institution)
    finally:
        await producer.stop()
        await reader.stop()

    print(f"\norder {order.order_id} as the clinic reads it over HTTP:")
    print(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"trace id {trace_id} (each event's traceparent carries it; export spans with "
          "OTEL_EXPORTER_OTLP_ENDPOINT)")
    if ok:
        print(f"\nOK: the lab slice completed in {_ms(started):.0f} ms")
        return 0
    print(f"\nFAILED: expected {expected}, saw {seen} within {DEADLINE_S:.0f} s", file=sys.stderr)
    return 1


async def _read_order(stack: Stack, order_id: str, institution: str) -> dict:
    assert stack.keys is not None
    token = issue_token(stack.keys.auth_private_pem, user="qiaoren-doc-01",
                        institution=institution, roles=["clinician"], audience="lab")
    async with httpx.AsyncClient(base_url=stack.services["lab"].url, timeout=10) as client:
        response = await client.get(f"/orders/{order_id}",
                                    headers={"Authorization": f"Bearer {token}"})
        return {"status": response.status_code, "body": response.json()}


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


async def _main() -> int:
    setup_telemetry("demo")  # a real trace id, carried into every event of the journey
    stack = Stack(services=["lab"])
    print("starting the embedded stack …", flush=True)
    await stack.start()
    try:
        print(stack.describe())
        return await run_journey(stack)
    except Exception as exc:  # noqa: BLE001 - a demo reports, then exits non-zero
        print(f"FAILED: {exc!r}", file=sys.stderr)
        for name, service in stack.services.items():
            print(f"--- {name} log ---\n{service.log_tail()}", file=sys.stderr)
        return 1
    finally:
        await stack.stop()


def main() -> None:
    raise SystemExit(asyncio.run(_main()))


if __name__ == "__main__":
    main()

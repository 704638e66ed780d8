"""`make demo` (yigongti-demo) end to end: the reference scenario against the
real broker, database and Orthanc, every service in its own process. While
the stack is still up (--keep-running) the test reads the final states back
itself — over the services' HTTP and from every events topic — then stops the
demo with Ctrl-C: it exits 0, has printed the timeline, the breakdown and the
trace summary, and every span the run wrote, in the OTLP JSON encoding, is in
the journey's trace or in a trace linked to it by a link that resolves."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import harness
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from yigongti_deploy import trace_summary
from yigongti_deploy.demo_journey import COUNTY, TOWNSHIP
from yigongti_deploy.devkeys import DEMO_TERMINAL_ID
from yigongti_kit.auth import issue_token

BIN = Path(sys.executable).parent
UP_TO_S = 420


def _wait_for_stack(out: Path, demo: subprocess.Popen) -> None:
    deadline = time.monotonic() + UP_TO_S
    while "Ctrl-C stops the stack." not in out.read_text():
        assert demo.poll() is None, out.read_text()[-5000:]
        assert time.monotonic() < deadline, out.read_text()[-5000:]
        time.sleep(0.5)


async def _events(record: dict) -> dict[str, list[dict]]:
    """Every event of the four services' topics, by type (its last two parts)."""
    consumer = AIOKafkaConsumer(**{**harness.client_kwargs(record["bootstrap"], "consumer",
                                                           record["broker_kind"]),
                                   "group_id": None})
    await consumer.start()
    try:
        tps = []
        for service in ("lab", "diagnosis", "referral", "settlement"):
            topic = f"{record['topic_prefix']}{service}.events.v1"
            tps += [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)
                    or await _partitions(consumer, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        by_type: dict[str, list[dict]] = defaultdict(list)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    ce_type = dict(r.headers)["ce_type"].decode()
                    by_type[ce_type.removeprefix("yigongti.")].append(json.loads(r.value))
        return by_type
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(100):
        await consumer._client.force_metadata_update()
        if consumer.partitions_for_topic(topic):
            return consumer.partitions_for_topic(topic)
        await asyncio.sleep(0.1)
    raise AssertionError(f"no partitions for {topic}")


def _client(record: dict, service: str, institution: str, roles: list[str],
            user: str = "test-reader") -> httpx.AsyncClient:
    key = (Path(record["keys"]) / "auth_private.pem").read_text()
    token = issue_token(key, user=user, institution=institution, roles=roles, audience=service)
    # The test's reads are part of the run: they continue the journey's trace.
    return httpx.AsyncClient(base_url=record["services"][service], timeout=10,
                             headers={"Authorization": f"Bearer {token}",
                                      "traceparent": record["traceparent"]})


def _of(events: dict, kind: str, **where) -> list[dict]:
    return [e for e in events.get(kind, []) if all(e.get(k) == v for k, v in where.items())]


async def _assert_final_states(record: dict) -> None:
    facts = record["facts"]
    events = await _events(record)
    patient, visit = facts["patient_ref"], facts["visit_id"]

    # 1. identified by face at the township.
    assert _of(events, "settlement.identity.verified.v1", visit_id=visit,
               credential_type="face", institution=TOWNSHIP)

    # 2–3. the ECG: STAT, reported with a STEMI, the critical finding acknowledged.
    request_id = facts["request_id"]
    [queued] = _of(events, "diagnosis.queued.v1", request_id=request_id)
    assert queued["priority"] == "stat"
    [reported] = _of(events, "diagnosis.reported.v1", request_id=request_id)
    assert reported["conclusions"] == ["I21.0"]
    assert _of(events, "diagnosis.critical_finding.raised.v1", request_id=request_id)
    assert _of(events, "diagnosis.critical_finding.acknowledged.v1", request_id=request_id)
    async with _client(record, "diagnosis", TOWNSHIP, ["clinician"]) as clinic:
        seen = (await clinic.get(f"/requests/{request_id}")).json()
    assert seen["status"] not in ("queued", "claimed"), seen["status"]
    assert len(seen["revisions"]) == 1

    # 4. suggested from the finding, then the upward referral through arrival
    # (closed at discharge, step 7).
    [suggested] = _of(events, "referral.suggested.v1", patient_ref=patient)
    assert suggested["to_institution"] == COUNTY
    assert suggested["diagnosis_request_id"] == request_id
    up = facts["referral_up"]
    for kind in ("opened", "accepted", "patient.in_transit", "patient.received", "closed"):
        assert _of(events, f"referral.{kind}.v1", referral_id=up), kind
    async with _client(record, "referral", TOWNSHIP, ["clinician"]) as township:
        view = (await township.get(f"/referrals/{up}")).json()
        assert view["state"] == "closed" and view["outcome"] == "discharged", view
        # 7. the downward referral: taken over, both rounds done, none due.
        down = facts["referral_down"]
        view = (await township.get(f"/referrals/{down}")).json()
        assert view["state"] == "closed" and view["outcome"] == "care_taken_over", view
        due = (await township.get("/follow-ups/due")).json()["follow_ups"]
        assert not [d for d in due if d["referral_id"] == down]
    assert len(_of(events, "referral.follow_up.scheduled.v1", referral_id=down)) == 2
    assert sorted(e["round_day"] for e in _of(events, "referral.follow_up.done.v1",
                                         referral_id=down)) == [7, 30]

    # 5. the township's order verified, both critical values acknowledged.
    order = facts["lab_order"]
    assert _of(events, "lab.report.verified.v1", order_id=order)
    assert len(_of(events, "lab.critical_value.raised.v1", order_id=order)) == 2
    assert len(_of(events, "lab.critical_value.acknowledged.v1", order_id=order)) == 2
    async with _client(record, "lab", TOWNSHIP, ["clinician"]) as clinic:
        view = (await clinic.get(f"/orders/{order}")).json()
        assert view["status"] == "completed", view
        assert {t["status"] for t in view["tests"]} == {"verified"}, view["tests"]
        assert (await clinic.get(f"/orders/{order}/report")).status_code == 200
    # … and at the county: troponin repeated with its override, HbA1c not.
    county = facts["county_order"]
    [accepted] = _of(events, "lab.order.accepted.v1", order_id=county)
    assert accepted["tests"] == ["CTNI"] and accepted["avoided_tests"] == ["HBA1C"]
    [avoided] = _of(events, "lab.test.duplicate_avoided.v1", order_id=county)
    assert avoided["test_code"] == "HBA1C" and avoided["patient_ref"] == patient
    async with _client(record, "lab", COUNTY, ["clinician"]) as cardiology:
        tests = {t["test_code"]: t["status"]
                 for t in (await cardiology.get(f"/orders/{county}")).json()["tests"]}
    assert tests["HBA1C"] == "avoided" and tests["CTNI"] != "avoided", tests

    # 6. settled by face: completed, the parts add up to the total.
    [completed] = _of(events, "settlement.settlement.completed.v1", visit_id=visit)
    parts = ("basic", "critical_illness", "large_amount_subsidy", "assistance", "out_of_pocket")
    assert sum(Decimal(completed[p]) for p in parts) == Decimal(completed["total"]) > 0
    charged = sum(Decimal(c["amount"]) for kind in ("lab", "diagnosis")
                  for c in _of(events, f"{kind}.charges.posted.v1", visit_id=visit))
    assert Decimal(completed["total"]) == charged
    async with _client(record, "settlement", TOWNSHIP, ["settlement_terminal"],
                       user=DEMO_TERMINAL_ID) as counter:
        answer = (await counter.get(f"/settlements/{facts['out_biz_no']}")).json()
    assert answer["status"] == "completed", answer


def test_the_demo_plays_the_reference_journey_in_one_trace(tmp_path):
    out = tmp_path / "demo.out"
    with out.open("w") as sink:
        demo = subprocess.Popen([str(BIN / "yigongti-demo"), "--keep-running"], cwd=tmp_path,
                                stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _wait_for_stack(out, demo)
        [journey_file] = list(tmp_path.glob(".run/stack-*/journey.json"))
        asyncio.run(_assert_final_states(json.loads(journey_file.read_text())))
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
        returncode = demo.wait(120)
    text = out.read_text()
    assert returncode == 0, text[-5000:]
    for step in range(1, 8):
        assert f"— step {step}:" in text
    assert "[yigongti.referral.patient.received.v1]" in text
    assert "[yigongti.lab.test.duplicate_avoided.v1]" in text
    assert "first medical contact → first ECG" in text and "door-in" in text
    assert "settlement breakdown" in text and "the patient pays" in text
    assert "the journey's trace, from" in text and "slowest span:" in text
    assert "/ws" in text and "curl -s -H" in text

    [spans_file] = list(tmp_path.glob(".run/stack-*/spans.otlp.jsonl"))
    spans = trace_summary.load(spans_file)
    [journey] = [s for s in spans if s.name == "demo journey"]
    summary = trace_summary.summary(spans, journey.trace_id)
    assert summary.outside == (), [(s.service, s.name) for s in summary.outside[:10]]
    assert summary.dangling_links == ()
    assert {"demo", "lab", "diagnosis", "referral", "settlement"} <= set(summary.services)
    assert summary.kafka_hops >= 20 and summary.http_requests >= 20
    assert summary.linked > 0  # the analyser's HL7 messages, linked to the order's trace

"""The `yigongti` command end to end against the lab on the real broker and
database: order, collect, dispatch, a refusal in plain words, the inbox with a
critical value and its time left, and the read-back (a wrong value or unit
sends nothing; the right one is acknowledged)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import harness
from aiokafka import AIOKafkaProducer
from labflow import Terminal, ce_type, payload
from labjourney import confirm, new_patient, obs, one, receive, report_results, verify
from typer.testing import CliRunner
from yigongti_terminal.cli import app

runner = CliRunner()


async def yigongti(clinic, *args: str, input: str | None = None):  # noqa: A002
    """Run the command as a clinic would (in a thread: it runs its own event loop)."""
    result = await asyncio.to_thread(
        runner.invoke, app, ["--home", str(clinic.config.home), *args], input=input,
        env={"COLUMNS": "250"})
    return result


@dataclass
class _LabView:
    """What labjourney's staff and LIS helpers need of a lab under test."""

    runtime: object
    events: object
    topics: dict
    terminal: Terminal


async def test_a_clinic_orders_collects_dispatches_and_acknowledges_with_read_back(
        clinic, dev_keys, kafka_bootstrap, broker_kind):
    patient = new_patient()
    order_id = f"O-{uuid.uuid4().hex[:12]}"
    barcode = f"B{uuid.uuid4().hex[:10]}"

    placed = await yigongti(clinic, "lab", "order", "--patient", patient, "--test", "K",
                            "--sex", "male", "--age", "80", "--visit", "V-1", "--clinician",
                            "doc-17", "--priority", "stat", "--order-id", order_id)
    assert placed.exit_code == 0, placed.output
    assert "Accepted" in placed.output

    tube = await yigongti(clinic, "lab", "collect", order_id, "--barcode", barcode,
                          "--test", "K", "--tube", "serum_gold")
    assert tube.exit_code == 0 and "Accepted" in tube.output, tube.output

    refused = await yigongti(clinic, "lab", "collect", order_id, "--barcode", barcode + "X",
                             "--test", "GLU", "--tube", "serum_gold")
    assert refused.exit_code == 1, refused.output
    assert "A test on this tube is not on the order. [test_not_ordered]" in \
        " ".join(refused.output.split())

    sent = await yigongti(clinic, "lab", "dispatch", "--barcode", barcode, "--courier",
                          "courier-5", "--logger", "logger-9")
    assert sent.exit_code == 0 and "Accepted" in sent.output, sent.output

    # The lab centre receives the tube; the analyser finds a critical potassium.
    producer = AIOKafkaProducer(**harness.client_kwargs(kafka_bootstrap, "producer",
                                                        broker_kind))
    await producer.start()
    try:
        lab = _LabView(clinic.lab, clinic.events, clinic.topics,
                       Terminal(dev_keys.signer(), producer, clinic.topics["lab.intake.v1"]))
        await receive(lab, dev_keys, barcode)
        await report_results(lab, dev_keys, barcode, obs("K", "6.80"))
        await confirm(lab, dev_keys, barcode)
        raised = await one(lab, "critical_value.raised.v1", barcode=barcode)
    finally:
        await producer.stop()
    critical_id = raised["critical_id"]

    shown = await yigongti(clinic, "inbox", "--wait", "5")
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "Critical items waiting for acknowledgement" in text and critical_id in text
    assert " min " in text  # its time left

    waiting_before = len(clinic.client.queue.waiting())
    wrong_unit = await yigongti(clinic, "lab", "ack", critical_id, input="6.8\nmmol/l\n")
    assert wrong_unit.exit_code == 1
    assert "[read_back_mismatch]" in " ".join(wrong_unit.output.split())
    wrong_value = await yigongti(clinic, "lab", "ack", critical_id, input="8.6\nmmol/L\n")
    assert wrong_value.exit_code == 1
    db_rows = clinic.client.queue._db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    assert len(clinic.client.queue.waiting()) == waiting_before
    assert db_rows == 4  # order, tube, refused tube, dispatch: no acknowledgement sent

    right = await yigongti(clinic, "lab", "ack", critical_id, input="6.8\nmmol/L\n")
    assert right.exit_code == 0 and "Accepted" in right.output, right.output
    acknowledged = await one(lab, "critical_value.acknowledged.v1", critical_id=critical_id)
    assert acknowledged["channel"] == "terminal"

    after = await yigongti(clinic, "inbox")
    assert "Critical items waiting" not in after.output
    assert [payload(r)["order_id"] for r in clinic.events.records
            if ce_type(r).endswith("order.accepted.v1")].count(order_id) == 1

    await verify(lab, dev_keys, order_id)  # the lab physician signs the report
    report = await yigongti(clinic, "lab", "report", order_id)
    assert report.exit_code == 0, report.output
    row = next(line for line in report.output.splitlines() if "6.80" in line)
    assert "mmol/L" in row and "CRITICAL" in row and "phys-2" in row
    other = await yigongti(clinic, "lab", "report", "O-not-ours")
    assert other.exit_code == 1
    assert "No such order for this clinic" in " ".join(other.output.split())

    state = await yigongti(clinic, "status")
    assert state.exit_code == 0, state.output
    lab_row = next(line for line in state.output.splitlines() if "│ lab" in line)
    assert "reachable" in lab_row and "ok" in lab_row

    nothing = await yigongti(clinic, "outbox")
    assert nothing.exit_code == 0 and "Nothing waits" in nothing.output

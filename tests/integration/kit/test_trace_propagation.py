"""A trace started at the terminal's publish continues through the lab consumer,
its SQL, the outbox and the relay's publish, into the published record's
traceparent (issue 2, "Checked by"; in-memory span exporter)."""

from __future__ import annotations

import pytest
from labflow import ce_type, header, order, payload
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

ASYNCPG_SCOPE = "opentelemetry.instrumentation.asyncpg"


@pytest.fixture
def exporter():
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()
    exporter.shutdown()  # stays attached to the process's provider, but stops collecting


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    """Parent, grandparent, … of `span` among the exported spans."""
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


async def test_trace_crosses_kafka_sql_and_the_outbox(start_lab, exporter, dev_keys):
    lab = await start_lab(span_exporter=exporter)
    intake, events = lab.topics["lab.intake.v1"], lab.topics["lab.events.v1"]
    o = order(dev_keys.institution_id)
    with trace.get_tracer("tests").start_as_current_span("clinic visit") as root:
        await lab.terminal.publish(o)
    trace_id = root.get_span_context().trace_id
    [accepted] = await lab.events.wait_for(
        lambda r: ce_type(r).endswith("order.accepted.v1") and payload(r)["order_id"] == o.order_id)

    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in spans}

    def one(name: str, kind: SpanKind) -> ReadableSpan:
        found = [s for s in spans if s.name == name and s.kind == kind]
        assert len(found) == 1, (name, [(s.name, s.kind) for s in spans])
        return found[0]

    terminal = one(f"{intake} publish", SpanKind.PRODUCER)
    process = one(f"{intake} process", SpanKind.CONSUMER)
    relay = one(f"{events} publish", SpanKind.PRODUCER)
    # The Kafka hop: the consumer continues the span the record's headers name.
    assert terminal.parent.span_id == root.get_span_context().span_id
    assert process.parent.span_id == terminal.context.span_id
    assert process.attributes["yigongti.outcome"] == "applied"
    # SQL of the handler's transaction runs inside the consumer's span ...
    sql = [s for s in spans if s.instrumentation_scope.name == ASYNCPG_SCOPE]
    statements = " ".join(str(s.attributes.get("db.statement", "")) for s in sql)
    assert "INSERT INTO outbox" in statements and "orders" in statements
    for s in sql:
        assert process in _ancestors(s, by_id), s.name
        assert all(not str(v).startswith(o.patient_ref) for v in s.attributes.values())
    # ... and the outbox carries the trace to the relay's publish.
    assert process in _ancestors(relay, by_id)
    assert [s.name for s in _ancestors(relay, by_id)][-3:] == [
        process.name, terminal.name, root.name]
    # The published record names the relay's span as its parent.
    version, record_trace, record_span, _flags = header(accepted, "traceparent").split("-")
    assert version == "00"
    assert int(record_trace, 16) == trace_id
    assert int(record_span, 16) == relay.context.span_id
    assert relay.attributes["cloudevents.event_id"] == header(accepted, "ce_id")


async def test_background_polls_make_no_spans(start_lab, exporter, dev_keys):
    """The relay, the timer poller and the probes poll PostgreSQL all the time; an
    exported trace must hold what a request or an event caused, not a root span
    per poll (kit telemetry.background_context)."""
    import asyncio

    lab = await start_lab(span_exporter=exporter)
    o = order(dev_keys.institution_id)
    await lab.terminal.publish(o)
    await lab.events.wait_for(
        lambda r: ce_type(r).endswith("order.accepted.v1") and payload(r)["order_id"] == o.order_id)
    await asyncio.sleep(0.5)
    exporter.clear()
    await asyncio.sleep(2.0)  # idle: only the background loops run
    idle_sql = [s for s in exporter.get_finished_spans()
                if s.instrumentation_scope.name == ASYNCPG_SCOPE]
    assert idle_sql == [], [s.name for s in idle_sql[:5]]

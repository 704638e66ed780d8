import json
import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from yigongti_kit.settings import KitSettings
from yigongti_kit.telemetry import (
    JsonFormatter,
    configure_logging,
    context_from_traceparent,
    current_trace_headers,
    extract_context,
    inject_headers,
    metrics,
    setup_telemetry,
    tracer,
)

exporter = InMemorySpanExporter()
reader = InMemoryMetricReader()


@pytest.fixture(autouse=True)
def telemetry():
    t = setup_telemetry("kit-test", KitSettings(), span_exporter=exporter, metric_reader=reader)
    exporter.clear()
    return t


def test_setup_is_idempotent(telemetry):
    again = setup_telemetry("kit-test", KitSettings(), span_exporter=exporter)
    assert again is telemetry
    assert trace.get_tracer_provider() is telemetry.tracer_provider
    with tracer().start_as_current_span("once"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["once"]  # not exported twice


def test_trace_context_travels_in_kafka_headers():
    with tracer().start_as_current_span("publish") as span:
        headers = inject_headers([("ce_id", b"1"), ("traceparent", b"stale")])
        sent_trace = span.get_span_context().trace_id
    names = [k for k, _ in headers]
    assert names.count("traceparent") == 1 and ("ce_id", b"1") in headers
    ctx = extract_context(headers)
    with tracer().start_as_current_span("consume", context=ctx) as child:
        assert child.get_span_context().trace_id == sent_trace
    consume = [s for s in exporter.get_finished_spans() if s.name == "consume"][0]
    assert (
        consume.parent.span_id
        == [s for s in exporter.get_finished_spans() if s.name == "publish"][0].context.span_id
    )


def test_no_active_span_means_no_trace_headers():
    assert inject_headers([("ce_id", b"1")]) == [("ce_id", b"1")]
    assert current_trace_headers() == (None, None)
    assert not trace.get_current_span(extract_context([])).get_span_context().is_valid


def test_trace_context_survives_the_outbox():
    with tracer().start_as_current_span("change") as span:
        traceparent, tracestate = current_trace_headers()
        trace_id = span.get_span_context().trace_id
    assert traceparent and traceparent.startswith("00-")
    ctx = context_from_traceparent(traceparent, tracestate)
    with tracer().start_as_current_span("relay publish", context=ctx) as later:
        assert later.get_span_context().trace_id == trace_id
    assert not trace.get_current_span(context_from_traceparent(None)).get_span_context().is_valid


def test_metrics_are_recorded():
    m = metrics()
    assert metrics() is m
    m.records_consumed.add(1, {"topic": "lab.intake.v1"})
    m.records_rejected.add(1, {"topic": "lab.intake.v1", "reason": "bad_signature"})
    m.dead_lettered.add(1, {"topic": "lab.intake.v1"})
    m.outbox_published.add(3, {"topic": "lab.events.v1"})
    m.outbox_backlog.set(7)
    m.handler_duration.record(0.004, {"topic": "lab.intake.v1"})
    m.consumer_paused.add(1, {"topic": "lab.intake.v1"})
    m.consumer_paused.add(-1, {"topic": "lab.intake.v1"})
    m.timers_fired.add(1, {"kind": "due"})
    data = reader.get_metrics_data()
    found = {
        metric.name: metric
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    for name in (
        "records_consumed",
        "records_rejected",
        "dead_lettered",
        "outbox_published",
        "outbox_backlog",
        "handler_duration",
        "consumer_paused",
        "timers_fired",
    ):
        assert f"yigongti.{name}" in found
    rejected = found["yigongti.records_rejected"].data.data_points[0]
    assert rejected.attributes["reason"] == "bad_signature"
    assert found["yigongti.outbox_backlog"].data.data_points[0].value == 7


def test_log_lines_are_json_with_trace_ids():
    formatter = JsonFormatter("lab")
    logger = logging.getLogger("test.telemetry")
    with tracer().start_as_current_span("handle") as span:
        record = logger.makeRecord(
            "test.telemetry",
            logging.INFO,
            __file__,
            1,
            "accepted %s",
            ("O-1",),
            None,
            extra={"ce_id": "abc", "attempt": 2, "obj": object()},
        )
        line = json.loads(formatter.format(record))
        ctx = span.get_span_context()
    assert line["message"] == "accepted O-1" and line["service"] == "lab"
    assert line["trace_id"] == format(ctx.trace_id, "032x")
    assert line["span_id"] == format(ctx.span_id, "016x")
    assert line["ce_id"] == "abc" and line["attempt"] == 2
    assert "obj" not in line  # only scalar extras


def test_configure_logging_writes_json_to_stderr(capsys):
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        configure_logging("lab")
        configure_logging("lab")  # idempotent: one handler of ours
        logging.getLogger("test.stderr").warning("relay lagging", extra={"rows": 5})
        lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
        assert [x["message"] for x in lines] == ["relay lagging"]
        assert lines[0]["rows"] == 5 and lines[0]["level"] == "WARNING"
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
        root.setLevel(level)


def test_otlp_json_file_exporter_writes_export_requests(tmp_path):
    """Each export appends one ExportTraceServiceRequest in protobuf's JSON mapping."""
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from yigongti_kit.telemetry import OtlpJsonFileExporter

    path = tmp_path / "spans.jsonl"
    provider = TracerProvider(resource=Resource.create({"service.name": "lab"}))
    provider.add_span_processor(SimpleSpanProcessor(OtlpJsonFileExporter(str(path))))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("parent") as parent:
        with tracer.start_as_current_span("child"):
            pass
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    requests = [json_format.Parse(line, ExportTraceServiceRequest()) for line in lines]
    spans = [s for r in requests for rs in r.resource_spans for ss in rs.scope_spans
             for s in ss.spans]
    assert {s.name for s in spans} == {"parent", "child"}
    child = next(s for s in spans if s.name == "child")
    assert child.parent_span_id == parent.get_span_context().span_id.to_bytes(8, "big")
    assert child.trace_id == parent.get_span_context().trace_id.to_bytes(16, "big")
    attrs = {a.key: a.value.string_value
             for a in requests[0].resource_spans[0].resource.attributes}
    assert attrs["service.name"] == "lab"

"""OpenTelemetry for a service: traces, metrics, trace context in Kafka headers, logs.

- `setup_telemetry(service, settings)` once at start (safe to call again): traces
  and metrics go to OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set; tests pass
  an in-memory span exporter / metric reader instead.
- `instrument_asyncpg()` and `instrument_fastapi(app)` trace SQL and HTTP. SQL
  spans carry the statement, never its parameters; a service turns them on only
  when spans are exported (`Telemetry.exporting_spans`): a span per statement
  is a large share of a handler's CPU, and unexported it helps no one. Trace
  context crosses HTTP, Kafka, the outbox and timers either way.
- Kafka records carry W3C `traceparent`/`tracestate` headers: `inject_headers`
  on publish, `extract_context` on consume; the outbox stores the pair with
  `current_trace_headers()` and the relay resumes it with `context_from_traceparent`.
- `metrics()` holds the kit's instruments.
- `configure_logging(service)`: JSON lines on stderr with trace_id/span_id.

Personal data never goes into logs, span attributes or metric attributes: no
payloads, no header values other than ids, no names or national ID numbers.
Log identifiers (ce_id, order id, terminal id) and codes, nothing else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)

INSTRUMENTATION_NAME = "yigongti_kit"
TRACE_HEADERS = ("traceparent", "tracestate")

Headers = list[tuple[str, bytes]]


@dataclass
class Telemetry:
    """The process's providers (one pair per process)."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    service_name: str
    exporting_spans: bool = False  # an OTLP endpoint or a test's exporter is attached

    def force_flush(self, timeout_ms: int = 5000) -> None:
        self.tracer_provider.force_flush(timeout_ms)
        self.meter_provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        """Flush and stop exporting (at process exit)."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


_state: Telemetry | None = None
_span_exporters: list[int] = []
_metric_readers: list[int] = []


def setup_telemetry(
    service_name: str,
    settings: Any = None,
    span_exporter: SpanExporter | None = None,
    metric_reader: MetricReader | None = None,
) -> Telemetry:
    """Install the global tracer and meter providers; returns them.

    `settings` is a KitSettings (or None): its OTEL_EXPORTER_OTLP_ENDPOINT turns on
    batched OTLP/HTTP export. `span_exporter` is attached with a SimpleSpanProcessor
    (synchronous, for tests), `metric_reader` as an extra reader. Calling again in
    the same process returns the same providers, attaching any exporter or reader
    not attached yet; the service name of the first call stays.
    """
    global _state
    if _state is None:
        resource = Resource.create({"service.name": service_name})
        tracer_provider = TracerProvider(resource=resource)
        readers: list[MetricReader] = []
        endpoint = getattr(settings, "otel_exporter_otlp_endpoint", None)
        if endpoint:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )

            base = endpoint.rstrip("/")
            tracer_provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces"))
            )
            readers.append(
                PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics"))
            )
        traces_file = getattr(settings, "otel_traces_file", None)
        if traces_file:
            tracer_provider.add_span_processor(BatchSpanProcessor(OtlpJsonFileExporter(traces_file)))
        # Scraped at /metrics in Prometheus format (prometheus_endpoint below).
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        readers.append(PrometheusMetricReader())
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        trace.set_tracer_provider(tracer_provider)
        otel_metrics.set_meter_provider(meter_provider)
        _state = Telemetry(tracer_provider, meter_provider, service_name,
                           exporting_spans=bool(endpoint or traces_file))
    if span_exporter is not None and id(span_exporter) not in _span_exporters:
        _state.tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        _span_exporters.append(id(span_exporter))
        _state.exporting_spans = True
    if metric_reader is not None and id(metric_reader) not in _metric_readers:
        _state.meter_provider.add_metric_reader(metric_reader)
        _metric_readers.append(id(metric_reader))
    return _state


class OtlpJsonFileExporter(SpanExporter):
    """Spans appended to a file as OTLP JSON: one `ExportTraceServiceRequest` per
    line, in protobuf's JSON mapping (what `json_format` writes and the collector's
    file exporter reads). Several processes may append to one file: each line is
    written with one `write` on a file opened for appending."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[Any]) -> Any:
        from google.protobuf import json_format
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
        from opentelemetry.sdk.trace.export import SpanExportResult

        line = json_format.MessageToJson(encode_spans(spans), indent=None) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@contextlib.contextmanager
def untraced_sql():
    """SQL run inside is not traced: work that belongs to no one event or request
    (a batch's own transaction and inbox rows around its records, migrations).
    Each record's span starts from a fresh context, where SQL is traced again."""
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

    token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        yield
    finally:
        detach(token)


def background_context() -> None:
    """Call first in a background loop's task (relay, timer poller, probes): the
    SQL it runs on its own is not traced, so an exported trace holds the work a
    request or an event caused, not a root span per poll. Spans the loop starts
    itself (a traced row it publishes, a timer it fires) are still made."""
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, set_value

    attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))


def flush_spans(timeout_ms: int = 5000) -> None:
    """Export the spans still buffered (at shutdown: a file or a collector gets
    the last spans before the process ends)."""
    if _state is not None:
        _state.tracer_provider.force_flush(timeout_ms)


def spans_exported() -> bool:
    """Whether this process exports spans (an OTLP endpoint or a test's exporter).
    Without, the kit skips spans nobody would see and passes the trace context
    it received on, so the trace still crosses the service."""
    return _state is not None and _state.exporting_spans


def tracer() -> trace.Tracer:
    """The kit's tracer (from the global provider)."""
    return trace.get_tracer(INSTRUMENTATION_NAME)


def instrument_asyncpg() -> None:
    """Trace every asyncpg query (statement only, no parameters). Idempotent."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    instrumentor = AsyncPGInstrumentor(capture_parameters=False)
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


def instrument_fastapi(app: Any) -> None:
    """Trace the app's HTTP requests (health probes excluded). Idempotent per app.

    With spans exported: OpenTelemetry's FastAPI instrumentation. Without: a
    span per request and nothing more (the caller's traceparent continued, so
    the events a request causes carry its trace), at a fraction of the cost."""
    if getattr(app, "_is_instrumented_by_opentelemetry", False) \
            or getattr(app.state, "traced", False):
        return
    if _state is not None and _state.exporting_spans:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz")
    else:
        app.add_middleware(_RequestSpan)
    app.state.traced = True


class _RequestSpan:
    """ASGI middleware: one server span per HTTP request, child of the caller's
    traceparent when it sends one."""

    _SKIP = frozenset({"/healthz", "/readyz"})

    def __init__(self, app: Any) -> None:
        self.app = app
        self.tracer = trace.get_tracer(INSTRUMENTATION_NAME)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in self._SKIP:
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
                   if k in (b"traceparent", b"tracestate")}
        with self.tracer.start_as_current_span(
                f"HTTP {scope['method']}", context=propagate.extract(carrier, context=Context()),
                kind=trace.SpanKind.SERVER):
            await self.app(scope, receive, send)


# --- trace context in Kafka headers ------------------------------------------------


class _HeaderSetter(Setter[Headers]):
    def set(self, carrier: Headers, key: str, value: str) -> None:
        carrier.append((key, value.encode()))


class _HeaderGetter(Getter[Sequence[tuple[str, bytes | None]]]):
    def get(self, carrier: Sequence[tuple[str, bytes | None]], key: str) -> list[str] | None:
        values = [v.decode("utf-8", "replace") for k, v in carrier if k == key and v is not None]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, bytes | None]]) -> list[str]:
        return [k for k, _ in carrier]


_SETTER = _HeaderSetter()
_GETTER = _HeaderGetter()


def inject_headers(headers: Iterable[tuple[str, bytes]], context: Context | None = None) -> Headers:
    """`headers` with the current (or given) trace context as traceparent/tracestate.

    Any trace headers already there are replaced; without an active span none are added.
    """
    carrier: Headers = [(k, v) for k, v in headers if k not in TRACE_HEADERS]
    propagate.inject(carrier, context=context, setter=_SETTER)
    return carrier


def extract_context(headers: Sequence[tuple[str, bytes | None]]) -> Context:
    """The trace context a Kafka record carries (an empty context when it has none)."""
    return propagate.extract(headers, context=Context(), getter=_GETTER)


def current_trace_headers() -> tuple[str | None, str | None]:
    """(traceparent, tracestate) of the current span, for storing in the outbox."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent"), carrier.get("tracestate") or None


def context_from_traceparent(traceparent: str | None, tracestate: str | None = None) -> Context:
    """The context to continue a stored trace in (empty when there is none)."""
    carrier: dict[str, str] = {}
    if traceparent:
        carrier["traceparent"] = traceparent
        if tracestate:
            carrier["tracestate"] = tracestate
    return propagate.extract(carrier, context=Context())


# --- metrics -----------------------------------------------------------------------


@dataclass(frozen=True)
class Metrics:
    """The kit's instruments. Attributes are codes and names only (topic, reason,
    component…), never identifiers of patients or free text."""

    records_consumed: otel_metrics.Counter  # attrs: topic
    records_rejected: otel_metrics.Counter  # attrs: topic, reason
    dead_lettered: otel_metrics.Counter  # attrs: topic, reason
    outbox_published: otel_metrics.Counter  # attrs: topic
    outbox_refused: otel_metrics.Counter  # rows the broker refused for good; attrs: schema
    outbox_backlog: otel_metrics.Gauge  # unsent outbox rows, set by the relay
    handler_duration: otel_metrics.Histogram  # seconds; attrs: topic, ce_type
    consumer_paused: otel_metrics.UpDownCounter  # paused partitions; attrs: topic
    consumer_lag: otel_metrics.Gauge  # records behind the end; attrs: topic, partition
    timers_fired: otel_metrics.Counter  # attrs: kind
    timers_failed: otel_metrics.Counter  # a handler failed; retried later, never dropped
    intake_unverified: otel_metrics.Counter  # records from senders not verified; attrs: reason
    outbox_refused_rows: otel_metrics.Gauge  # rows set aside, waiting for a resend; attrs: schema
    broker_up: otel_metrics.Gauge  # 1 while the broker answers the runtime's probe
    relay_leading: otel_metrics.Gauge  # 1 while this process's relay holds the lead; attrs: schema


@cache
def metrics() -> Metrics:
    """The kit's instruments, created once on the global meter provider (they
    forward to the provider `setup_telemetry` installs, even if created before)."""
    meter = otel_metrics.get_meter(INSTRUMENTATION_NAME)
    return Metrics(
        records_consumed=meter.create_counter(
            "yigongti.records_consumed", unit="{record}", description="Intake records handled"
        ),
        records_rejected=meter.create_counter(
            "yigongti.records_rejected",
            unit="{record}",
            description="Intake records answered with IntakeRejected, by reason",
        ),
        dead_lettered=meter.create_counter(
            "yigongti.dead_lettered",
            unit="{record}",
            description="Records copied to the dead-letter topic",
        ),
        outbox_published=meter.create_counter(
            "yigongti.outbox_published",
            unit="{event}",
            description="Outbox rows published by the relay",
        ),
        outbox_refused=meter.create_counter(
            "yigongti.outbox_refused",
            unit="{event}",
            description="Outbox rows the broker refused for good (set aside with the error)",
        ),
        outbox_backlog=meter.create_gauge(
            "yigongti.outbox_backlog", unit="{event}", description="Outbox rows not yet published"
        ),
        handler_duration=meter.create_histogram(
            "yigongti.handler_duration",
            unit="s",
            description="Time to handle one intake record (decode, domain, transaction)",
        ),
        consumer_paused=meter.create_up_down_counter(
            "yigongti.consumer_paused",
            unit="{partition}",
            description="Partitions paused by an infrastructure fault",
        ),
        consumer_lag=meter.create_gauge(
            "yigongti.consumer_lag",
            unit="{record}",
            description="Records between the committed offset and the end of a partition",
        ),
        timers_fired=meter.create_counter(
            "yigongti.timers_fired", unit="{timer}", description="Durable timers fired"
        ),
        outbox_refused_rows=meter.create_gauge(
            "yigongti.outbox_refused_rows", unit="{event}",
            description="Outbox rows the broker refused for good, not resent yet",
        ),
        broker_up=meter.create_gauge(
            "yigongti.broker_up", unit="1",
            description="1 while the Kafka broker answers the service's probe, else 0",
        ),
        relay_leading=meter.create_gauge(
            "yigongti.relay_leading", unit="1",
            description="1 while this process's outbox relay holds the lead (publishes), "
            "else 0; a service with none leading publishes nothing",
        ),
        timers_failed=meter.create_counter(
            "yigongti.timers_failed", unit="{timer}",
            description="Timer handlers that failed (the timer is tried again later)",
        ),
        intake_unverified=meter.create_counter(
            "yigongti.intake_unverified",
            unit="{record}",
            description="Intake records whose sender is not verified (no answer; kept for ops)",
        ),
    )


def prometheus_app():
    """A small ASGI app serving this process's metrics at /metrics in the
    Prometheus text format (on a port of its own: the Ingress never routes it)."""
    from fastapi import FastAPI
    from fastapi.responses import Response
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    app = FastAPI(title="metrics", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/metrics")
    async def scrape() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


# --- logging -----------------------------------------------------------------------

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)
_SCALARS = (str, int, float, bool, type(None))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, service, trace ids,
    and any scalar `extra=` fields. Callers log identifiers and codes only."""

    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        for key, value in record.__dict__.items():
            # color_message: uvicorn's copy of the message with ANSI colour codes.
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in entry \
                    and key != "color_message":
                if isinstance(value, _SCALARS):
                    entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _KitHandler(logging.StreamHandler):
    """Marker so a second configure_logging replaces, not adds."""


def configure_logging(service: str, level: str | int = "INFO") -> None:
    """Root logging as JSON lines on stderr. Idempotent (replaces its own handler only).

    Never log payloads, record values, header values other than ids, names or
    national ID numbers: the logs hold no personal data.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _KitHandler)]:
        root.removeHandler(old)
    handler = _KitHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    # uvicorn and aiokafka log through the root handler, in the same format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True

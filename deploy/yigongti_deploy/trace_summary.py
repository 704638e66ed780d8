"""Read spans written in the OTLP JSON encoding and summarise one journey's trace.

The services and the demo append `ExportTraceServiceRequest`s, one per line, to
one file (kit telemetry, OTEL_TRACES_FILE). `load` reads them back with
protobuf's own JSON mapping; `summary` says how many spans the journey's trace
holds, which services and Kafka hops it crosses, its slowest span, and which
spans of the run are neither in it nor linked to it.

    python -m yigongti_deploy.trace_summary RUN_DIR/spans.otlp.jsonl [TRACE_ID]
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

SQL_SCOPE = "opentelemetry.instrumentation.asyncpg"
_KIND = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    service: str
    scope: str
    start_ns: int
    end_ns: int
    links: tuple[tuple[str, str], ...]  # (trace id, span id) it links to

    @property
    def ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def load(path: Path | str) -> list[Span]:
    spans = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        request = json_format.Parse(line, ExportTraceServiceRequest())
        for rs in request.resource_spans:
            service = next((a.value.string_value for a in rs.resource.attributes
                            if a.key == "service.name"), "?")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(Span(
                        s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name,
                        _KIND.get(s.kind, "unspecified"), service, ss.scope.name,
                        s.start_time_unix_nano, s.end_time_unix_nano,
                        tuple((link.trace_id.hex(), link.span_id.hex()) for link in s.links)))
    return spans


@dataclass(frozen=True)
class Summary:
    trace_id: str
    spans: int
    services: tuple[str, ...]
    kafka_hops: int  # consumer spans: a record read by a service
    http_requests: int
    sql_statements: int
    slowest: Span | None
    linked: int  # spans of other traces linked to the journey's
    outside: tuple[Span, ...]  # spans neither in the trace nor linked to it
    dangling_links: tuple[Span, ...]  # spans whose link names no exported span

    def lines(self) -> list[str]:
        out = [f"trace {self.trace_id}: {self.spans} spans across "
               f"{', '.join(self.services)}; {self.kafka_hops} Kafka hops, "
               f"{self.http_requests} HTTP requests, {self.sql_statements} SQL statements"
               + (f"; {self.linked} spans of other traces linked to it" if self.linked else "")]
        if self.slowest is not None:
            out.append(f"slowest span: {self.slowest.name} ({self.slowest.service}, "
                       f"{self.slowest.ms:.1f} ms)")
        if self.outside:
            names = Counter(f"{s.service}: {s.name}" for s in self.outside)
            out.append(f"{len(self.outside)} spans outside the trace: "
                       + ", ".join(f"{n} ×{c}" for n, c in names.most_common(5)))
        if self.dangling_links:
            out.append(f"{len(self.dangling_links)} links that do not resolve")
        return out


def summary(spans: list[Span], trace_id: str) -> Summary:
    ids = {s.span_id for s in spans}
    journey = [s for s in spans if s.trace_id == trace_id]
    # A trace that links to the journey belongs to it, with all its spans.
    linked_traces = {s.trace_id for s in spans
                     if s.trace_id != trace_id and any(t == trace_id for t, _ in s.links)}
    linked = [s for s in spans if s.trace_id in linked_traces]
    outside = tuple(s for s in spans
                    if s.trace_id != trace_id and s.trace_id not in linked_traces)
    dangling = tuple(s for s in spans if any(sid not in ids for _, sid in s.links))
    non_root = [s for s in journey if s.parent_id and s.scope != SQL_SCOPE]
    return Summary(
        trace_id=trace_id,
        spans=len(journey),
        services=tuple(sorted({s.service for s in journey + linked})),
        kafka_hops=sum(1 for s in journey + linked if s.kind == "consumer"),
        http_requests=sum(1 for s in journey + linked if s.kind == "server"),
        sql_statements=sum(1 for s in journey + linked if s.scope == SQL_SCOPE),
        slowest=max(non_root, key=lambda s: s.ms, default=None),
        linked=len(linked),
        outside=outside,
        dangling_links=dangling,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    spans = load(argv[0])
    trace_id = argv[1] if len(argv) > 1 else Counter(s.trace_id for s in spans).most_common(1)[0][0]
    print("\n".join(summary(spans, trace_id).lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

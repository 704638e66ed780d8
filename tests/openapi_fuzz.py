"""A property-based run of schemathesis against a running service's HTTP API
(issue 9, "The OpenAPI is a contract too"), written for any service:

    report = await asyncio.to_thread(fuzz, FuzzTarget(base_url, document, callers, seeds))
    assert not report.failures, report.summary()

It reads the OpenAPI the service serves; for every operation it draws requests
that fit the document (positive) and requests that do not (negative), sends
each with the token of the next of `callers` in turn (one per role, and none),
with path parameters (and body fields of the same name) drawn either from
`seeds` (ids of data the test put in every state) or from the document, and
checks that the answer:

- is no 5xx (not_a_server_error);
- has a status, content type, headers and body the document lists for that
  operation (status_code_conformance, content_type_conformance,
  response_headers_conformance, response_schema_conformance);
- refuses what the document refuses (negative_data_rejection);
- is refused without a token when the document asks for one (ignored_auth);
- never echoes a request value in a 4xx body, and no log line of the service,
  while it answers, carries a request value or is an ERROR.

Hypothesis runs derandomized with no example database, so a run is
repeatable; `max_examples` bounds its length. Failures
are collected, not raised (no shrinking), one line per distinct fault, each
with a `curl` to reproduce it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from yigongti_kit.telemetry import JsonFormatter

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance,
          negative_data_rejection, ignored_auth]
# Values shorter than this are too common to say a log line echoes them ("1", "ab").
MIN_ECHO_LEN = 6


@dataclass
class FuzzTarget:
    base_url: str
    document: dict
    # name -> extra request headers (Authorization), {} for a caller without a token
    callers: Mapping[str, Mapping[str, str]]
    # path parameter name -> values of seeded data (ids of orders in every state…)
    seeds: Mapping[str, Sequence[str]] = field(default_factory=dict)
    max_examples: int = 60
    modes: Sequence[GenerationMode] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # label -> fixed parts of its requests, e.g. {"GET /feed": {"query": {"wait": 0}}}
    # (a long-poll that waits its full time makes a run long, not better)
    fixed: Mapping[str, Mapping[str, Mapping]] = field(default_factory=dict)


@dataclass
class FuzzReport:
    requests: int = 0
    seconds: float = 0.0
    http_seconds: float = 0.0  # of which waiting for answers
    statuses: Counter = field(default_factory=Counter)  # "GET /feed 422" -> count
    failures: dict[str, str] = field(default_factory=dict)  # distinct fault -> reproduction

    def summary(self) -> str:
        lines = [f"{len(self.failures)} distinct faults in {self.requests} requests "
                 f"({self.seconds:.0f} s):"]
        lines += [f"- {key}\n    {repro}" for key, repro in sorted(self.failures.items())]
        return "\n".join(lines)


class LogCapture(logging.Handler):
    """Every log record of the process while the run lasts, as its formatted line."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(formatter)
        self.lines: list[tuple[int, str]] = []
        self._lock_lines = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is itself a finding
            line = f"<unformattable record of {record.name}>"
        with self._lock_lines:
            self.lines.append((record.levelno, line))

    def since(self, mark: int) -> list[tuple[int, str]]:
        with self._lock_lines:
            return self.lines[mark:]

    def mark(self) -> int:
        with self._lock_lines:
            return len(self.lines)


def _strings(value: Any) -> list[str]:
    """Every scalar in a request part, as text (keys too)."""
    out: list[str] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            out.append(str(k))
            out.extend(_strings(v))
    elif isinstance(value, list | tuple):
        for v in value:
            out.extend(_strings(v))
    elif value is not None and not isinstance(value, bool):
        out.append(str(value))
    return out


def _sent_values(case, known: set[str]) -> set[str]:
    """The values a request carried that only it could have (not a seed, not a
    word of the document), long enough that finding one in a log line means an echo."""
    values = set()
    # A query parameter's name is not counted: the edge names where a refused
    # value was (`["query", "<name>"]`) when the name is field-like, by design.
    query_values = list((case.query or {}).values())
    for part in (case.path_parameters, query_values, case.headers, case.body):
        for text in _strings(part if not isinstance(part, bytes) else part.decode("latin-1")):
            if len(text) >= MIN_ECHO_LEN and text not in known:
                values.add(text)
    return values


def _echoes(text: str, values: set[str]) -> str | None:
    for value in values:
        if value in text or json.dumps(value)[1:-1] in text:
            return value
    return None


def _document_words(document: dict) -> set[str]:
    """Strings of the document itself (enum values, names): a service may log those."""
    words: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                words.add(str(k))
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str):
            words.add(node)

    walk(document)
    return words


def fuzz(target: FuzzTarget, logs: LogCapture) -> FuzzReport:
    """Run every operation of `target.document` against `target.base_url` (blocking:
    call it in a thread when the service runs in this process's event loop)."""
    schema = schemathesis.openapi.from_dict(target.document)
    schema.config.update(base_url=target.base_url)
    report = FuzzReport()
    known = {v for values in target.seeds.values() for v in values} | _document_words(
        target.document)
    session = requests.Session()
    callers = sorted(target.callers)
    started = time.monotonic()

    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        path_names = [p.name for p in operation.path_parameters]
        fixed = target.fixed.get(label, {})
        seedable = path_names and all(target.seeds.get(n) for n in path_names)
        for mode in target.modes:
            cases = operation.as_strategy(generation_mode=mode, **fixed)
            if seedable:
                seeded_paths = st.fixed_dictionaries(
                    {name: st.sampled_from(list(target.seeds[name])) for name in path_names})
                # Seeded first: the branch Hypothesis favours reaches real data.
                cases = st.one_of(seeded_paths.flatmap(
                    lambda path, op=operation, mode=mode, fixed=fixed: op.as_strategy(
                        generation_mode=mode, path_parameters=path, **fixed)), cases)
            _run_operation(target, report, logs, session, known, label, mode, cases, callers)
    report.seconds = time.monotonic() - started
    return report


def _run_operation(target, report, logs, session, known, label, mode, cases, callers):
    turn = iter(range(10**9))

    @settings(max_examples=target.max_examples, derandomize=True, database=None,
              deadline=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @hypothesis.given(case=cases, data=st.data())
    def run(case, data):
        if mode.is_positive and isinstance(case.body, dict):
            _seed_body(case.body, target.seeds, data)
        # Callers take turns (a drawn caller would be the simplest one nearly always).
        caller = callers[next(turn) % len(callers)]
        headers = dict(target.callers[caller])
        mark = logs.mark()
        sent_at = time.monotonic()
        try:
            response = case.call(base_url=target.base_url, session=session,
                                 headers=headers, timeout=30)
        except requests.RequestException as exc:
            report.failures.setdefault(f"{label}: request failed ({type(exc).__name__})",
                                       case.as_curl_command(headers=headers))
            return
        report.requests += 1
        report.http_seconds += time.monotonic() - sent_at
        report.statuses[f"{label} {response.status_code}"] += 1
        report.statuses[f"({caller}) {response.status_code}"] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers,
                                   transport_kwargs={"base_url": target.base_url,
                                                     "headers": headers})
        except (AssertionError, BaseExceptionGroup) as exc:  # a Failure, or a FailureGroup
            for failure in getattr(exc, "exceptions", [exc]):
                title = getattr(failure, "title", type(failure).__name__)
                if _mutation_not_sent(target, label, failure, response):
                    continue
                key = f"{label} [{mode.value}] {response.status_code}: {title}"
                report.failures.setdefault(key, _repro(case, headers, failure))
        sent = _sent_values(case, known)
        if 400 <= response.status_code < 500:
            echoed = _echoes(response.text, sent)
            if echoed is not None:
                report.failures.setdefault(
                    f"{label} {response.status_code}: the answer echoes a request value",
                    case.as_curl_command(headers=headers))
        time.sleep(0.005)  # let the service finish logging about this request
        for level, line in logs.since(mark):
            # The Kafka client's connection errors (a broker another test stopped,
            # its client not yet closed) say nothing about the request; whether
            # they carry a request value is still checked below.
            kafka_noise = '"logger": "aiokafka' in line
            if level >= logging.ERROR and not kafka_noise:
                first = line.split("\\n")[0][:160]
                report.failures.setdefault(f"{label}: ERROR log line {first}",
                                           case.as_curl_command(headers=headers))
            if _echoes(line, sent) is not None:
                report.failures.setdefault(
                    f"{label}: a log line carries a request value",
                    case.as_curl_command(headers=headers))

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        pass  # nothing to negate (an operation without parameters or body)


def _mutation_not_sent(target: FuzzTarget, label: str, failure, response) -> bool:
    """A negative case whose only violation was an extra query parameter, when the
    request that went out carries none (a `fixed` query replaced what the
    generator drew): nothing invalid was sent, so nothing had to be refused."""
    if getattr(failure, "title", "") != "Schema-violating request accepted" \
            or "additionalProperties" not in str(failure) or "query" not in str(failure):
        return False
    method, path = label.split(" ", 1)
    operation = target.document.get("paths", {}).get(path, {}).get(method.lower(), {})
    documented = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}
    sent = parse_qs(urlsplit(response.request.url).query, keep_blank_values=True)
    return set(sent) <= documented


def _seed_body(body: dict, seeds: Mapping[str, Sequence[str]], data) -> None:
    """Put seeded ids into body fields of the same name, half of the time (a
    generated observation id never finds a result to amend)."""
    for name in sorted(body):
        if seeds.get(name) and data.draw(st.booleans()):
            body[name] = data.draw(st.sampled_from(list(seeds[name])))


def _repro(case, headers: dict, failure: Exception) -> str:
    message = str(failure).strip().splitlines()
    detail = " | ".join(line.strip() for line in message[:6] if line.strip())[:500]
    return f"{detail}\n    {case.as_curl_command(headers=headers)}"


async def fuzz_service(service: str, base_url: str, callers: Mapping[str, Mapping[str, str]],
                       seeds: Mapping[str, Sequence[str]], *, max_examples: int,
                       reader: str = "clinician", drop_paths: Sequence[str] = (),
                       fixed: Mapping[str, Mapping[str, Mapping]] | None = None
                       ) -> FuzzReport:
    """`fuzz` the document `service` serves (read with `reader`'s token, less
    `drop_paths`), with the process's log lines captured as the service writes
    them; prints the run's counts."""
    async with httpx.AsyncClient(base_url=base_url, headers=dict(callers[reader])) as client:
        served = await client.get("/openapi.json")
    assert served.status_code == 200, served.text
    document = served.json()
    for path in drop_paths:
        del document["paths"][path]
    logs = LogCapture(JsonFormatter(service))
    root = logging.getLogger()
    level = root.level
    root.addHandler(logs)
    root.setLevel(logging.INFO)
    try:
        report = await asyncio.to_thread(fuzz, FuzzTarget(
            base_url, document, callers, seeds, max_examples=max_examples,
            fixed=fixed or {}), logs)
    finally:
        root.removeHandler(logs)
        root.setLevel(level)
    print(f"\nschemathesis: {report.requests} requests in {report.seconds:.0f} s"
          f" ({report.http_seconds:.0f} s waiting for answers)")
    for key, count in sorted(report.statuses.items()):
        print(f"  {key}: {count}")
    return report

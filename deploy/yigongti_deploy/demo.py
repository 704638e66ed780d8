"""`make demo` (yigongti-demo): the reference journey (DESIGN §3) across the
four services on the embedded stack, in one trace.

An 80-year-old man with chest pain walks into a township health centre
(大西渠镇卫生院, 昌吉市), which has no chest-pain centre:
 1. the clinic identifies him by face scan (demo_settle.py);
 2. records a 12-lead ECG and sends it, made STAT (demo_ecg.py);
 3. the remote ECG centre claims it and reports a critical STEMI, which the
    clinic acknowledges with read-back;
 4. the referral service suggests the county chest-pain centre; the referral
    is requested, accepted, the patient departs and arrives (demo_referral.py);
 5. his blood is collected, dispatched, received, a critical troponin,
    verified; at the county troponin is repeated with its override and
    HbA1c is not (DuplicateTestAvoided) (demo_lab.py);
 6. the township visit is settled by face scan: three payers (demo_settle.py);
 7. a downward referral hands him back to the township, with follow-up rounds.

It prints the timeline, the time of each step, the chest-pain-centre
measures, the breakdown, the trace summary and where the diagnostician's
page is (demo_report.py). Exit 0 when every step reached its expected state,
else 1, naming the step that did not. `--keep-running` leaves the stack up
with a token and curl lines to try, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from types import SimpleNamespace

from aiokafka import AIOKafkaProducer
from opentelemetry import trace
from yigongti_kit.telemetry import flush_spans, setup_telemetry

from . import demo_ecg, demo_lab, demo_referral, demo_report, demo_settle, trace_summary
from .demo_journey import LAB_CENTRE, TOWNSHIP, Events, Journey, StepFailed, Timeline, kafka_kwargs
from .orthanc import URL_ENV as PACS_URL_ENV
from .orthanc import OrthancMissing, require_orthanc
from .stack import Stack

STEPS = (
    (1, "face-scan identification at the township", demo_settle.identify),
    (2, "the STEMI ECG uploaded, triaged STAT", demo_ecg.upload_stat),
    (3, "ECG claimed, reported critical, acknowledged", demo_ecg.report_critical),
    (4, "referral suggested, requested, accepted, departed, arrived", demo_referral.refer_up),
    (5, "troponin sample to verified report; repeats at the county", None),
    (6, "face-scan settlement, three payers", demo_settle.settle),
    (7, "downward referral with follow-up rounds", demo_referral.refer_down),
)


async def _lab_step(j: Journey) -> None:
    await demo_lab.township_sample(j)
    await demo_lab.county_repeat(j)


async def play(j: Journey) -> None:
    """The seven steps in order; the first that fails raises StepFailed naming it."""
    await demo_settle.enrol(j)
    for number, title, run in STEPS:
        async with j.step(number, title):
            await (run or _lab_step)(j)


def _print(title: str, lines: list[str]) -> None:
    print(f"\n{title}")
    for line in lines:
        print(f"  {line}")


async def run(stack: Stack, keep_running: bool) -> tuple[int, int | None]:
    """Play the journey and print what it gives: (exit code, the time in ns
    from which the stack was left to explore, if it was)."""
    events = Events(stack)
    await events.start()
    producer = AIOKafkaProducer(**kafka_kwargs(stack, "producer"))
    await producer.start()
    j = Journey(stack, events, Timeline(), producer=producer)
    # One span for the whole journey, enrolment included: every span of the
    # run is in its trace or linked to it.
    span = trace.get_tracer("yigongti.demo").start_span("demo journey")
    stack.journey_trace_id = format(span.get_span_context().trace_id, "032x")
    j.facts["journey_span_id"] = format(span.get_span_context().span_id, "016x")
    rc = 0
    try:
        with trace.use_span(span, end_on_exit=True):
            print("\nthe journey (elapsed · who · where: what, [the event that shows it]):")
            await play(j)
    except StepFailed as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        rc = 1
    finally:
        await producer.stop()
        await events.stop()
    _print("time of each step:", demo_report.step_times(j))
    if rc:
        return rc, None
    _print("chest-pain-centre measures (from the events' own times):", demo_report.measures(j))
    _print("settlement breakdown (三重保障 一站式结算):", demo_report.settlement(j))
    own = Counter(s.ce_type.removeprefix("yigongti.") for s in events.seen
                  if s.trace_id != stack.journey_trace_id)
    print(f"\n{len(events.seen) - sum(own.values())} of the {len(events.seen)} events carry the "
          "journey's trace context" + (
              "; in traces of their own, linked to it where the analysers' HL7 messages enter "
              "(HL7 v2 carries no trace context): "
              + ", ".join(f"{t} ×{n}" for t, n in sorted(own.items())) if own else ""))
    _print("open:", demo_report.workstation(j, keep_running))
    _write_record(j)
    print("\nOK: every step reached its expected state")
    if not keep_running:
        return 0, None
    explored_from = time.time_ns()
    _print("the stack stays up:", demo_report.try_lines(j))
    await _until_interrupted()
    return 0, explored_from


def _write_record(j: Journey) -> None:
    """What the journey made, for exploring (--keep-running) and for the
    end-to-end test: the services, the broker, the ids and times, the trace."""
    stack = j.stack
    record = {"services": {name: s.url for name, s in stack.services.items()},
              "bootstrap": stack.bootstrap, "broker_kind": stack.broker_kind,
              "topic_prefix": stack.topic_prefix, "keys": str(stack.keys.directory.resolve()),
              "trace_id": stack.journey_trace_id,
              # To continue the journey's trace when exploring (W3C traceparent).
              "traceparent": f"00-{stack.journey_trace_id}-"
                             f"{j.facts['journey_span_id']}-01",
              "facts": {k: v for k, v in j.facts.items() if k != "settlement"}}
    (stack.run_dir / "journey.json").write_text(json.dumps(record, default=str, indent=1))


async def _until_interrupted() -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()


async def _main(keep_running: bool) -> int:
    if not os.environ.get(PACS_URL_ENV):
        try:  # the one system prerequisite: stop at once, saying how to install it
            require_orthanc()
        except OrthancMissing as exc:
            print(f"yigongti-demo: {exc}", file=sys.stderr)
            return 1
    # The scenario's township and the lab centre that serves it (demo_journey.py).
    stack = Stack(export_spans=True, institution_id=TOWNSHIP, lab_centre_id=LAB_CENTRE)
    # Every process of the run, the demo's too, appends its spans to one file in
    # the OTLP JSON encoding; the journey's trace is summarised from it at the end.
    setup_telemetry("demo", SimpleNamespace(otel_traces_file=str(stack.traces_file)))
    print("starting the embedded stack …", flush=True)
    await stack.start()
    try:
        print(stack.describe())
        # A clinic's ECG is measured at once by a warm service: the journey's
        # clock (first medical contact → first ECG) starts when the worker
        # has imported neurokit2, not while it still does.
        print("waiting for the ECG measurement worker …", flush=True)
        await stack.services["diagnosis"].wait_component("analyser")
        rc, explored_from = await run(stack, keep_running)
    except Exception as exc:  # noqa: BLE001 - a demo reports, then exits non-zero
        print(f"FAILED: {exc!r}", file=sys.stderr)
        rc = 1
    finally:
        if keep_running:
            print("stopping …", flush=True)
        logs = {name: s.log_path for name, s in stack.services.items()}
        # A service that died mid-run is the first thing to read about.
        died = {name: s.returncode for name, s in stack.services.items() if not s.running}
        await stack.stop()  # the services export their last spans as they stop
    if rc:
        for name, path in logs.items():
            exited = f" (it exited with code {died[name]} during the run)" if name in died else ""
            print(f"--- {name}: {path}, its errors{exited}:\n{_errors(path)}", file=sys.stderr)
        return rc
    flush_spans()
    spans = trace_summary.load(stack.traces_file)
    if explored_from is not None:
        # What was tried by hand afterwards (curl) starts traces of its own.
        spans = [s for s in spans if s.start_ns < explored_from
                 or s.trace_id == stack.journey_trace_id]
    summary = trace_summary.summary(spans, stack.journey_trace_id)
    _print(f"the journey's trace, from {stack.traces_file} (OTLP JSON):", summary.lines()
           + (["(spans begun after the stack was left to explore are not counted)"]
              if explored_from is not None else []))
    if summary.outside or summary.dangling_links:
        print("FAILED: spans outside the journey's trace, or links that do not resolve",
              file=sys.stderr)
        return 1
    return 0


def _errors(path, last: int = 10) -> str:
    """The last ERROR lines of a service's log (the rest is in the file)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join([line for line in lines if '"level": "ERROR"' in line][-last:]) or "(none)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="yigongti-demo",
        description="Starts the one-machine stack with every service, plays the reference "
        "journey (face-scan identification, STEMI ECG, critical finding, referral up, lab "
        "with critical values and mutual recognition, settlement, referral down) and "
        "prints its timeline; exits non-zero naming the step that did not complete.")
    parser.add_argument("--keep-running", action="store_true",
                        help="leave the stack up afterwards, print a token and curl lines "
                        "to try, and wait for Ctrl-C")
    args = parser.parse_args(argv)
    raise SystemExit(asyncio.run(_main(args.keep_running)))


if __name__ == "__main__":
    main()

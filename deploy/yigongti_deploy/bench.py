"""`make bench`: the lab journey's throughput against the per-event floor (DESIGN §8).

On one embedded stack (Stack: broker, PostgreSQL, the lab service as its own
process), in one run:

1. the per-event floor (bench_floor.py): N events, each one Kafka produce, one
   consume and one PostgreSQL transaction (inbox insert, state change, outbox
   insert), one consumer per partition; measured before and after the journey
   (the ratio uses the mean: the machine may be shared), and, for context, once
   with one transaction per polled batch;
2. the lab journey (bench_lab.py): orders of one or two tubes driven through
   every step the lab has (intake records and the staff's HTTP actions) with a
   fixed number of journeys in flight, for at most --max-seconds: specimens/s,
   journey events handled/s, p50/p95/p99 per step.

ratio = journey events handled/s ÷ per-event floor events/s; target ≥ 0.5.
Figures are printed and written to .run/bench-<timestamp>.json, with the CPU
each part used (and how busy the machine was with other work). Timings are
reported, never asserted (STYLE.md). `--profile` samples the lab process with
py-spy during the journey and prints where its time went.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from yigongti_kit.service import event_loop_runner

from .bench_common import BenchTarget
from .bench_critical import report_lines, run_critical
from .bench_floor import measure_floor
from .bench_lab import run_journeys

TARGET_RATIO = 0.5


async def run_bench(
    target: BenchTarget,
    *,
    floor_events: int,
    orders: int,
    concurrency: int,
    partitions: int = 6,
    warmup: int = 20,
    max_seconds: float = 60.0,
    step_timeout: float = 30.0,
    profile_to: Path | None = None,
    critical_load: float = 200.0,
    critical_seconds: float = 30.0,
    critical_probes_per_s: float = 4.0,
    progress=print,
) -> dict[str, Any]:
    """Measure the floor (per event before and after the journey, per batch once),
    the journey, and a critical value's way to the clinic under load, on
    `target`; returns the figures (see `report`)."""
    progress(f"floor, one transaction per event: {floor_events} events, {partitions} partitions …")
    before = await measure_floor(target, events=floor_events, partitions=partitions)
    progress(f"  {before.events_per_s:,.0f} events/s")
    progress(f"floor, one transaction per polled batch: {floor_events} events …")
    per_batch = await measure_floor(target, events=floor_events, partitions=partitions,
                                    batched=True)
    progress(f"  {per_batch.events_per_s:,.0f} events/s")
    progress(f"lab journey: up to {orders} orders, {concurrency} in flight, at most "
             f"{max_seconds:.0f} s (after {warmup} warm-up) …")
    journey = await run_journeys(target, orders=orders, concurrency=concurrency, warmup=warmup,
                                 max_seconds=max_seconds, step_timeout=step_timeout,
                                 profile_to=profile_to)
    figures = journey.as_dict()
    progress(f"  {figures['journey_events_per_s']:,.1f} journey events/s")
    progress("floor, one transaction per event, again after the journey …")
    after = await measure_floor(target, events=floor_events, partitions=partitions)
    progress(f"  {after.events_per_s:,.0f} events/s")
    progress(f"critical values to the clinic at {critical_load:.0f} inputs/s for "
             f"{critical_seconds:.0f} s …")
    critical = (await run_critical(target, load=critical_load, seconds=critical_seconds,
                                   probes_per_s=critical_probes_per_s,
                                   step_timeout=step_timeout)).as_dict()
    progress(f"  p99 {critical['confirm_to_clinic_feed']['p99_ms']:.1f} ms")
    floor = (before.events_per_s + after.events_per_s) / 2
    return {
        "critical_value_latency": critical,
        "broker": target.broker_kind,
        "cpus": os.cpu_count(),
        "floor": {
            "per_event_events_per_s": round(floor, 1),  # mean of before and after
            "per_event_before": before.as_dict(),
            "per_event_after": after.as_dict(),
            "per_batch": per_batch.as_dict(),
        },
        "journey": figures,
        "ratio": round(figures["journey_events_per_s"] / floor, 3),
        "ratio_to_batched_floor": round(figures["journey_events_per_s"] / per_batch.events_per_s,
                                        3),
        "target_ratio": TARGET_RATIO,
    }


def _cpu(parts: dict[str, float]) -> str:
    if not parts:
        return ""
    names = {"postgres_shared_and_other_dbs": "postgres (shared, other dbs)"}
    shown = [f"{names.get(k, k)} {v:.0f}%" for k, v in sorted(parts.items(), key=lambda x: -x[1])
             if not k.startswith("machine_") and v >= 1]
    return (f"CPU, % of one core: {', '.join(shown)}; machine "
            f"{parts.get('machine_busy_pct', 0):.0f}% busy")


def report(figures: dict[str, Any]) -> str:
    """The figures as a table and a one-line verdict."""
    floor, journey = figures["floor"], figures["journey"]
    before, after, pb = floor["per_event_before"], floor["per_event_after"], floor["per_batch"]
    lines = [
        "",
        f"per-event floor ({before['partitions']} partitions, one consumer each; "
        f"{before['events']} events per measurement; {figures['broker']} broker; "
        f"{figures['cpus']} CPUs)",
    ]
    for label, f in (("one tx per event, before", before), ("one tx per event, after", after),
                     ("one tx per polled batch", pb)):
        lines.append(f"  {label:<26}{f['events_per_s']:>9,.0f} events/s  ({f['seconds']:.2f} s, "
                     f"{f['transactions']} tx)  {_cpu(f.get('cpu_pct_of_a_core', {}))}")
    lines += [
        "",
        f"lab journey: {' → '.join(journey['steps'])}",
        f"  {journey['journeys_completed']} orders completed ({journey['specimens_completed']} "
        f"specimens), {journey['journeys_failed']} failed, of up to {journey['orders']}; "
        f"{journey['concurrency']} in flight; {journey['seconds']:.1f} s",
        f"  {_cpu(journey.get('cpu_pct_of_a_core', {}))}",
    ]
    if journey["steps_not_run"]:
        lines.append("  not run yet: " + "; ".join(
            f"{name} ({why})" for name, why in journey["steps_not_run"].items()))
    lines += [
        "",
        f"  {'step':<10}{'via':<8}{'inputs':>8}{'samples':>9}{'p50 ms':>10}{'p95 ms':>10}"
        f"{'p99 ms':>10}{'max ms':>10}  failures",
    ]
    for name, s in journey["per_step"].items():
        failures = ", ".join(f"{k}×{v}" for k, v in s["failures"].items()) or "-"
        lines.append(
            f"  {name:<10}{s['via']:<8}{s['inputs']:>8}{s['count']:>9}{s['p50_ms']:>10.1f}"
            f"{s['p95_ms']:>10.1f}{s['p99_ms']:>10.1f}{s['max_ms']:>10.1f}  {failures}")
    lines += [
        "",
        f"  specimens through the journey   {journey['specimens_per_s']:>10,.1f} /s",
        f"  journey events handled          {journey['journey_events_per_s']:>10,.1f} /s"
        f"  ({journey['inputs_handled']} intake records and staff actions)",
        f"  events published by the lab     {journey['output_events_per_s']:>10,.1f} /s",
        f"  per-event floor (mean)          {floor['per_event_events_per_s']:>10,.1f} /s",
        f"  ratio                           {figures['ratio']:>10.3f}"
        f"  (to the batched floor {figures['ratio_to_batched_floor']:.3f})",
    ]
    profile = journey.get("profile")
    if profile:
        lines += ["", f"lab process profile ({profile['samples']} samples, {profile['file']}):",
                  "  own time:"]
        lines += [f"    {pct:5.1f}%  {name}" for name, pct in profile["own_pct"].items()]
        lines.append("  platform code, inclusive:")
        lines += [f"    {pct:5.1f}%  {name}"
                  for name, pct in profile["platform_inclusive_pct"].items()]
    if "critical_value_latency" in figures:
        lines += report_lines(figures["critical_value_latency"])
    lines += ["", verdict(figures)]
    return "\n".join(lines)


def verdict(figures: dict[str, Any]) -> str:
    journey = figures["journey"]
    ratio = figures["ratio"]
    floor = figures["floor"]["per_event_events_per_s"]
    partial = (f" (steps not run yet: {', '.join(journey['steps_not_run'])})"
               if journey["steps_not_run"] else "")
    head = "MET" if ratio >= figures["target_ratio"] else "NOT MET"
    return (f"verdict: {head}: ratio {ratio:.3f} (target ≥ {figures['target_ratio']}) = "
            f"{journey['journey_events_per_s']:,.1f} journey events/s ÷ "
            f"{floor:,.1f} per-event floor events/s; "
            f"{journey['specimens_per_s']:,.1f} specimens/s{partial}")


def write_json(figures: dict[str, Any], run_dir: Path = Path(".run")) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(figures, indent=2, ensure_ascii=False, default=str))
    return path


# --- command line -------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yigongti_deploy.bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=5000,
                        help="measured journeys (orders), at most")
    parser.add_argument("--concurrency", type=int, default=128,
                        help="journeys in flight (on 2 cores throughput levels off near 128; "
                             "more only adds latency)")
    parser.add_argument("--floor-events", type=int, default=5000,
                        help="events of each floor variant")
    parser.add_argument("--partitions", type=int, default=6,
                        help="partitions (and consumers) of the floor topic")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured journeys first")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="stop starting journeys after this long")
    parser.add_argument("--step-timeout", type=float, default=30.0,
                        help="seconds to wait for one step's answer")
    parser.add_argument("--critical-load", type=float, default=200.0,
                        help="journey inputs/s in the background while critical values "
                             "are timed (DESIGN §8: 200)")
    parser.add_argument("--critical-seconds", type=float, default=30.0,
                        help="how long critical values are timed")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the lab process during the journey (needs py-spy)")
    parser.add_argument("--run-dir", type=Path, default=Path(".run"),
                        help="where the JSON figures (and the stack's logs) go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    # The same event loop the services run on (uvloop), for the floor and the driver.
    with event_loop_runner() as runner:
        return runner.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    from .stack import Stack

    stamp = time.strftime("%Y%m%d-%H%M%S")
    stack = Stack(args.run_dir / f"bench-stack-{stamp}", services=["lab"])
    print("starting the embedded stack …", flush=True)
    started = time.monotonic()
    await stack.start()
    try:
        print(stack.describe(), flush=True)
        target = BenchTarget.from_stack(stack)
        profile_to = args.run_dir / f"bench-{stamp}-lab.pyspy.txt" if args.profile else None
        figures = await run_bench(
            target, floor_events=args.floor_events, orders=args.orders,
            concurrency=args.concurrency, partitions=args.partitions, warmup=args.warmup,
            max_seconds=args.max_seconds, step_timeout=args.step_timeout,
            profile_to=profile_to, critical_load=args.critical_load,
            critical_seconds=args.critical_seconds, progress=lambda m: print(m, flush=True))
    except Exception as exc:  # noqa: BLE001 - report, with the lab's log, and exit non-zero
        traceback.print_exc()
        print(f"bench FAILED: {exc!r}", file=sys.stderr)
        for name, service in stack.services.items():
            print(f"--- {name} log ---\n{service.log_tail()}", file=sys.stderr)
        return 1
    finally:
        await stack.stop()
    figures["wall_seconds"] = round(time.monotonic() - started, 1)
    print(report(figures))
    print(f"figures: {write_json(figures, args.run_dir)} (whole run {figures['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

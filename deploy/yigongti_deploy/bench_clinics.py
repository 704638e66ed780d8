"""`make bench`, the clinics part (issue 14 item 4): many clinic terminals at
a chosen rate through the terminal's own client library
(yigongti_terminal.load), on a stack with the services that listen to the
lab's events, so that the load crosses services.

On one embedded stack (broker, PostgreSQL; the lab, referral and settlement
services, each its own process; referral and settlement also consume
lab.events.v1). K clinics, each a terminal of its own with its own key and
patients, registered with the lab and the referral service, send open loop
at `--rate` records/s for `--seconds`: lab orders, the tubes collected, their
dispatch, and for one patient in four an emergency upward referral (about
3.75 records per patient). Answered = the service's event for the record on
its events topic; refused = IntakeRejected, by reason. Per run: sent /
answered / refused / lost (and per service), the achieved rate, p50/p99 from
handing a record to the producer to its answer, and the lab's peak RSS
(VmHWM); the medians over the runs. Timings are reported, never asserted
(STYLE.md).

    python -m yigongti_deploy.bench_clinics [--rate 100] [--clinics 50]
        [--seconds 20] [--runs 3] [--bad 0] [--services lab,referral,settlement]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from yigongti_kit.service import event_loop_runner
from yigongti_terminal.load import DRIVEN, LoadTarget, drive, make_clinics, register

from .bench_common import on_own_stack, write_figures
from .bench_referral import peak_rss_mib

DEFAULT_SERVICES = ("lab", "referral", "settlement")


async def run_bench(stack, *, rate: float, clinics: int, seconds: float, runs: int,
                    bad: int = 0, drain_s: float = 60.0, console=None,
                    warmup_s: float = 3.0,
                    schemas: dict[str, str] | None = None) -> dict[str, Any]:
    """Register `clinics` terminals with the stack's lab (and referral service,
    when it runs) and drive them; returns the figures of each run and their
    medians. `schemas`: a service's schema when it is not the service's name."""
    driven = tuple(s for s in DRIVEN if s in stack.service_names)
    terminals = make_clinics(clinics, prefix="bench-clinic")
    for service in driven:
        await register(stack.database_url, (schemas or {}).get(service, service), terminals)
    target = LoadTarget(stack.bootstrap, stack.broker_kind or "embedded", stack.topic_prefix,
                        send_timeout_s=30.0)
    lab_pid = stack.services["lab"].pid
    if warmup_s > 0:  # connections, the lab's first fetches, the terminals' cache
        await drive(target, terminals, rate=max(1.0, rate / 4), seconds=warmup_s,
                    drain_s=drain_s, services=driven)
    results = []
    for n in range(runs):
        figures = await drive(target, terminals, rate=rate, seconds=seconds, bad=bad,
                              drain_s=drain_s, console=console, services=driven)
        figures["lab_peak_rss_mib"] = peak_rss_mib(lab_pid)
        print(f"run {n + 1}: {json.dumps(figures)}", flush=True)
        results.append(figures)
    return {
        "rate_target_per_s": rate, "clinics": clinics, "seconds_per_run": seconds,
        "services": list(stack.service_names), "runs": results,
        "median": {
            key: statistics.median(r[key] for r in results)
            for key in ("sent", "answered", "refused", "lost", "achieved_per_s", "p50_ms",
                        "p99_ms")
        },
        "refused_by_reason": _summed(r["refused_by_reason"] for r in results),
        "lab_peak_rss_mib": max((r["lab_peak_rss_mib"] or 0) for r in results) if results
        else None,
    }


def _summed(counts) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for reason, n in count.items():
            total[reason] = total.get(reason, 0) + n
    return dict(sorted(total.items()))


def report(figures: dict[str, Any]) -> str:
    m = figures["median"]
    lines = ["", f"clinics: {figures['clinics']} clinic terminals at "
                 f"{figures['rate_target_per_s']:g} records/s for "
                 f"{figures['seconds_per_run']:g} s ({', '.join(figures['services'])})"]
    for n, r in enumerate(figures["runs"], 1):
        lines.append(f"  run {n}: sent {r['sent']}, answered {r['answered']}, refused "
                     f"{r['refused']} {r['refused_by_reason'] or ''}, lost {r['lost']}; "
                     f"{r['achieved_per_s']}/s; p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms; "
                     + ", ".join(f"{k} {v['sent']}/{v['answered']}/{v['refused']}"
                                 for k, v in r["by_service"].items())
                     + " (sent/answered/refused)")
    lines.append(f"  medians: sent {m['sent']}, answered {m['answered']}, refused "
                 f"{m['refused']}, lost {m['lost']}; {m['achieved_per_s']}/s; p50 "
                 f"{m['p50_ms']} ms, p99 {m['p99_ms']} ms; lab peak RSS "
                 f"{figures['lab_peak_rss_mib']} MiB")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yigongti_deploy.bench_clinics",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="records/s, all clinics")
    parser.add_argument("--clinics", type=int, default=50, help="clinic terminals")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of one run")
    parser.add_argument("--runs", type=int, default=3, help="runs (medians are reported)")
    parser.add_argument("--bad", type=int, default=0,
                        help="deliberately refused orders per run (the refusal path)")
    parser.add_argument("--drain", type=float, default=60.0,
                        help="seconds to wait for the last answers of a run")
    parser.add_argument("--services", default=",".join(DEFAULT_SERVICES),
                        help="the stack's services (the lab first)")
    parser.add_argument("--run-dir", type=Path, default=Path(".run"),
                        help="where the JSON figures (and the stack's logs) go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    with event_loop_runner() as runner:
        return runner.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    from rich.console import Console

    services = [s for s in args.services.split(",") if s]
    if "lab" not in services:
        raise SystemExit("the clinics send to the lab: --services must include lab")
    figures, stamp = await on_own_stack(
        args.run_dir, "clinics", services,
        lambda stack: run_bench(stack, rate=args.rate, clinics=args.clinics,
                                seconds=args.seconds, runs=args.runs, bad=args.bad,
                                drain_s=args.drain, console=Console()))
    print(report(figures))
    write_figures(args.run_dir, "clinics", stamp, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

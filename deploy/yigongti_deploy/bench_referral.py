"""`make bench`, referral part (issue 12 item 10): a critical finding
published by the diagnosis service → the ReferralSuggested in the waiting
clinic's long-poll, at 200 findings/s, and the referral process's peak RSS;
medians of three runs.

On one embedded stack (broker, PostgreSQL, the referral service as its own
process). A bench producer publishes CriticalFindingRaised on
`diagnosis.events.v1` with the diagnosis service's source (the diagnosis
service is not in this stack yet): STEMIs of the township branches and
village clinics without a chest-pain centre, each of which the service turns
into a suggestion in that clinic's feed, about `rate` a second. A few a
second of them come from the probe clinic, which waits on its feed
(GET /feed?wait=…) with a clinician's token: latency = from handing the
finding to the producer to the long-poll answering with its suggestion.
Peak RSS: VmHWM of the referral process after each run (its peak since it
started). Timings are reported, never asserted (STYLE.md).

    python -m yigongti_deploy.bench_referral [--rate 200] [--seconds 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer
from yigongti_contracts.common import Age, AgeUnit, Sex
from yigongti_contracts.diagnosis.codes import Modality
from yigongti_contracts.diagnosis.v1 import CriticalFindingRaised
from yigongti_contracts.envelope import Envelope, to_headers
from yigongti_contracts.refdata import Kind
from yigongti_kit.auth import issue_token
from yigongti_kit.service import event_loop_runner
from yigongti_kit.settings import KitSettings, kafka_client_kwargs

from .bench_common import on_own_stack, summary_ms, write_figures

TARGET_P99_MS = 100.0
PROBE_CLINIC = "652301-B01"  # 佃坝镇分院: no chest-pain centre; the county's is nearest
READING_CENTRE = "652301-E01"
SUGGESTED = "yigongti.referral.suggested.v1"


def _senders() -> list[str]:
    """Clinics that lack a chest-pain centre and have a capable one above them."""
    from yigongti_referral.transitions import rules

    refdata = rules().refdata
    out = []
    for inst in refdata.institutions:
        if inst.kind not in (Kind.township_branch, Kind.village_clinic) or inst.id == PROBE_CLINIC:
            continue
        try:
            if not refdata.has_capability(inst.id, "chest_pain_centre") and \
                    refdata.upward_candidates(inst.id, "chest_pain_centre"):
                out.append(inst.id)
        except LookupError:
            continue
    return out


def _finding(institution: str) -> CriticalFindingRaised:
    now = datetime.now(UTC)
    request_id = f"DXR-B{secrets.token_hex(8)}"
    return CriticalFindingRaised(
        finding_id=f"CF-{secrets.token_hex(6)}", request_id=request_id,
        report_id=f"RPT-{secrets.token_hex(6)}",
        patient_ref="v1:" + secrets.token_hex(32), sex=Sex.male,
        age=Age(value=70, unit=AgeUnit.years), requesting_institution=institution,
        reading_centre=READING_CENTRE, modality=Modality.ECG, conclusion="I21.0",
        raised_at=now, acknowledge_by=now + timedelta(minutes=10))


class Feed:
    """The probe clinic waiting on its feed: when each request's suggestion came."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str) -> None:
        self.http, self.url, self.token = http, url, token
        self.arrived: dict[str, float] = {}
        self._task: asyncio.Task | None = None

    async def _get(self, after: int, wait: float) -> dict:
        async with self.http.get(f"{self.url}/feed",
                                 params={"after": after, "wait": wait, "limit": 500},
                                 headers={"Authorization": f"Bearer {self.token}"},
                                 timeout=aiohttp.ClientTimeout(wait + 30)) as response:
            response.raise_for_status()
            return await response.json()

    async def start(self) -> None:
        cursor = (await self._get(0, 0))["next"]
        while True:  # skip to the end
            page = await self._get(cursor, 0)
            if not page["items"]:
                break
            cursor = page["next"]
        self._task = asyncio.create_task(self._follow(cursor))

    async def _follow(self, cursor: int) -> None:
        while True:
            page = await self._get(cursor, 5)
            now = time.perf_counter()
            cursor = page["next"]
            for item in page["items"]:
                if item["type"] == SUGGESTED:
                    self.arrived[item["data"]["diagnosis_request_id"]] = now

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def peak_rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


async def one_run(*, producer: AIOKafkaProducer, topic: str, feed: Feed, senders: list[str],
                  rate: float, seconds: float, probes_per_s: float) -> dict[str, Any]:
    sent: dict[str, float] = {}
    published = 0

    async def publish(event: CriticalFindingRaised) -> None:
        envelope = Envelope(id=secrets.token_hex(16), source="/yigongti/diagnosis",
                            type=event.CE_TYPE, time=datetime.now(UTC),
                            subject=event.request_id, aggseq=1)
        await producer.send(topic, key=event.request_id.encode(),
                            headers=to_headers(envelope), value=event.model_dump_json().encode())

    every = 1 / rate
    probe_every = max(1, round(rate / probes_per_s))
    began = time.perf_counter()
    next_at = began
    index = 0
    while time.perf_counter() - began < seconds:
        probe = index % probe_every == 0
        event = _finding(PROBE_CLINIC if probe else senders[index % len(senders)])
        if probe:
            sent[event.request_id] = time.perf_counter()
        await publish(event)
        published += 1
        index += 1
        next_at += every
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await producer.flush()
    elapsed = time.perf_counter() - began
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline and not all(r in feed.arrived for r in sent):  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # polls a dict the feed's task fills
    latencies = [feed.arrived[r] - t for r, t in sent.items() if r in feed.arrived]
    return {"findings_per_s": round(published / elapsed, 1), "probes": len(sent),
            "missing": len(sent) - len(latencies), "to_feed": summary_ms(latencies)}


async def run_bench(stack, *, rate: float, seconds: float, runs: int,
                    probes_per_s: float = 5.0) -> dict[str, Any]:
    referral = stack.services["referral"]
    settings = KitSettings(service_name="bench", kafka_bootstrap_servers=stack.bootstrap,
                           kafka_broker_kind=stack.broker_kind or "embedded")
    producer = AIOKafkaProducer(**{**kafka_client_kwargs(settings, "producer"), "linger_ms": 1})
    await producer.start()
    token = issue_token(stack.keys.auth_private_pem, user="bench-doc", institution=PROBE_CLINIC,
                        roles=["clinician"], audience="referral", ttl_s=3600)
    senders = _senders()
    results = []
    try:
        async with aiohttp.ClientSession() as http:
            feed = Feed(http, referral.url, token)
            await feed.start()
            topic = stack.topic("diagnosis.events.v1")
            # Warm-up: the subscription's first fetch and the connections.
            await one_run(producer=producer, topic=topic, feed=feed, senders=senders,
                          rate=rate / 4, seconds=3, probes_per_s=probes_per_s)
            for n in range(runs):
                figures = await one_run(producer=producer, topic=topic, feed=feed,
                                        senders=senders, rate=rate, seconds=seconds,
                                        probes_per_s=probes_per_s)
                figures["peak_rss_mib"] = peak_rss_mib(referral.pid)
                print(f"run {n + 1}: {json.dumps(figures)}", flush=True)
                results.append(figures)
            await feed.stop()
    finally:
        await producer.stop()
    return {
        "rate_target": rate, "seconds_per_run": seconds, "runs": results,
        "median": {
            "findings_per_s": statistics.median(r["findings_per_s"] for r in results),
            "p50_ms": statistics.median(r["to_feed"]["p50_ms"] for r in results),
            "p99_ms": statistics.median(r["to_feed"]["p99_ms"] for r in results),
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] or 0 for r in results),
        },
        "target_p99_ms": TARGET_P99_MS,
    }


def report(figures: dict[str, Any]) -> str:
    m = figures["median"]
    met = m["p99_ms"] < figures["target_p99_ms"]
    return "\n".join([
        "",
        f"referral: critical finding → suggestion in the clinic's long-poll, medians of "
        f"{len(figures['runs'])} runs of {figures['seconds_per_run']:.0f} s at "
        f"{m['findings_per_s']:.0f} findings/s (target {figures['rate_target']:.0f})",
        f"  p50 {m['p50_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms; referral peak RSS "
        f"{m['peak_rss_mib']:.0f} MiB",
        f"verdict: {'MET' if met else 'NOT MET'}: p99 {m['p99_ms']:.1f} ms "
        f"(target < {figures['target_p99_ms']:.0f} ms)",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yigongti_deploy.bench_referral",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="findings/s published")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of one run")
    parser.add_argument("--runs", type=int, default=3, help="runs (medians are reported)")
    parser.add_argument("--run-dir", type=Path, default=Path(".run"),
                        help="where the JSON figures (and the stack's logs) go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    with event_loop_runner() as runner:
        return runner.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    figures, stamp = await on_own_stack(
        args.run_dir, "referral", ["referral"],
        lambda stack: run_bench(stack, rate=args.rate, seconds=args.seconds, runs=args.runs))
    print(report(figures))
    write_figures(args.run_dir, "referral", stamp, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`make bench`, the diagnosis part (issue 10), on the embedded stack with the
diagnosis service as its own process. Each figure is the median of three runs:

1. STAT request → on the ECG centre's worklist: at --rate requests/s for
   --seconds, a terminal publishes DiagnosisRequested (chest pain < 12 h, STAT)
   referring to recordings uploaded before the timed window; the time from
   publishing to the DiagnosisQueued event (the worklist's event stream) for
   a reader of that centre; p50/p99 (target p99 < 100 ms).
2. Upload plus measurement: distinct recordings (synthetic tracings, seeds
   apart) uploaded one after another, each measured in the worker:
   recordings/s and p99 of one upload's answer.
3. Report signed → critical finding in the clinic's waiting feed: a clinic
   long-polls GET /feed while a reader signs a critical report; from the
   sign call to the item in the feed; p50/p99 (target p99 < 100 ms).
4. Peak RSS (VmHWM) of the service process (target < 150 MB) and of its
   analysis worker, separately.

Timings are reported, never asserted (STYLE.md).

    python -m yigongti_deploy.bench_diagnosis [--rate 200 --seconds 2 --runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from .bench_common import summary_ms

CLINIC = "652325-B01"
ECG_CENTRE = "652325-E01"
PATIENT = "v1:" + "be" * 32


def _headers(keys, user: str, institution: str, roles: list[str]) -> dict:
    from yigongti_kit.auth import issue_token

    return {"Authorization": "Bearer " + issue_token(
        keys.auth_private_pem, user=user, institution=institution, roles=roles,
        audience="diagnosis")}


def peak_rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def worker_pids(parent: int) -> list[int]:
    """The service's spawned analysis worker(s): children running multiprocessing's spawn."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


class Events:
    """diagnosis.events.v1 read from the end, by request id and type."""

    def __init__(self, kwargs: dict, topic: str) -> None:
        self.kwargs = {**kwargs, "group_id": None, "enable_auto_commit": False}
        self.topic = topic
        self.seen: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(**self.kwargs)
        await self.consumer.start()
        partitions = None
        while not partitions:
            await self.consumer._client.force_metadata_update()
            partitions = self.consumer.partitions_for_topic(self.topic)
        tps = [TopicPartition(self.topic, p) for p in partitions]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        while True:
            for records in (await self.consumer.getmany(timeout_ms=20)).values():
                now = time.monotonic()
                for r in records:
                    kind = dict(r.headers)["ce_type"].decode().removeprefix("yigongti.diagnosis.")
                    body = json.loads(r.value)
                    self.seen.setdefault((kind, body.get("request_id") or body.get("key")), now)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.consumer.stop()

    async def wait(self, kind: str, ids: list[str], timeout: float = 60.0) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while any((kind, i) not in self.seen for i in ids):
            if time.monotonic() > deadline:
                missing = sum((kind, i) not in self.seen for i in ids)
                raise TimeoutError(f"{missing} of {len(ids)} {kind} missing")
            await asyncio.sleep(0.05)


async def _upload(http: httpx.AsyncClient, keys, data: bytes, media_type: str) -> dict:
    answer = await http.post("/recordings", content=data, headers={
        "Content-Type": media_type, **_headers(keys, "bench-cart", CLINIC, ["clinic_terminal"])})
    answer.raise_for_status()
    return answer.json()


def _request(ref: str):
    from yigongti_contracts.common import Age, AgeUnit, Sex
    from yigongti_contracts.diagnosis.codes import Modality
    from yigongti_contracts.diagnosis.v1 import DiagnosisRequested

    now = datetime.now(UTC)
    return DiagnosisRequested(
        request_id=f"BX-{uuid.uuid4().hex[:16]}", visit_id="VIS-BENCH", patient_ref=PATIENT,
        sex=Sex.male, age=Age(value=70, unit=AgeUnit.years), modality=Modality.ECG,
        recording_ref=ref, indications=("R07.4",), symptom_onset=now - timedelta(hours=1),
        requesting_institution=CLINIC, requesting_clinician="STAFF-0107", requested_at=now)


async def stat_to_worklist(http, keys, terminal, events: Events, *, rate: float,
                           seconds: float) -> dict:
    from pydicom.data import get_testdata_file

    sample = await asyncio.to_thread(Path(get_testdata_file("waveform_ecg.dcm")).read_bytes)
    n = int(rate * seconds)
    refs = []
    for start in range(0, n, 16):  # uploaded before the timed window
        batch = await asyncio.gather(*(_upload(http, keys, sample, "application/dicom")
                                       for _ in range(min(16, n - start))))
        refs += [b["recording_ref"] for b in batch]
    requests = [_request(ref) for ref in refs]
    sent: dict[str, float] = {}
    t0 = time.monotonic()
    for i, req in enumerate(requests):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[req.request_id] = time.monotonic()
        await terminal.publish(req)
    await events.wait("queued.v1", list(sent))
    figures = summary_ms([events.seen[("queued.v1", i)] - t for i, t in sent.items()])
    figures["offered_per_s"] = rate
    figures["achieved_per_s"] = round(n / (max(sent.values()) - t0 or 1e-9), 1)
    # Left on the worklist: drained by the critical-finding part.
    return figures | {"ids": list(sent)}


async def upload_and_measure(http, keys, *, count: int, seed0: int) -> dict:
    from yigongti_diagnosis.recording import to_csv
    from yigongti_diagnosis.synthetic import synthetic_stemi

    files = [to_csv(synthetic_stemi(seed=seed0 + i)).encode() for i in range(count)]
    times = []
    t0 = time.monotonic()
    for data in files:
        started = time.monotonic()
        answer = await _upload(http, keys, data, "text/csv")
        assert answer["measurements"] is not None, answer
        times.append(time.monotonic() - started)
    wall = time.monotonic() - t0
    return summary_ms(times) | {"recordings_per_s": round(count / wall, 2)}


async def _wait_feed(http, clinic: dict, after: int, rid: str) -> tuple[float, int]:
    """Long-poll the clinic's feed until the request's critical finding is in it."""
    while True:
        page = (await http.get("/feed", params={"after": after, "wait": 10, "limit": 500},
                               headers=clinic)).json()
        after = page["next"]
        if any(i["request_id"] == rid and i["type"].endswith("critical_finding.raised.v1")
               for i in page["items"]):
            return time.monotonic(), after


async def critical_to_feed(http, keys, *, probes: int) -> dict:
    reader = _headers(keys, "bench-reader", ECG_CENTRE, ["diagnostician", "reads_ecg"])
    clinic = _headers(keys, "bench-clinic", CLINIC, ["clinician"])
    cursor = (await http.get("/feed", params={"limit": 500}, headers=clinic)).json()["next"]
    while True:  # catch up with the feed first
        page = (await http.get("/feed", params={"after": cursor, "limit": 500},
                               headers=clinic)).json()
        if not page["items"]:
            break
        cursor = page["next"]
    times = []
    for _ in range(probes):
        claimed = (await http.post("/worklist/claim-next", headers=reader)).json()["claimed"]
        if claimed is None:
            break
        rid = claimed["request_id"]

        waiting = asyncio.create_task(_wait_feed(http, clinic, cursor, rid))
        await asyncio.sleep(0.05)  # the clinic is waiting in its long-poll
        started = time.monotonic()
        signed = await http.post(f"/requests/{rid}/report", headers=reader, json={
            "findings": "bench", "impression": "bench", "conclusions": ["I21.0"],
            "critical": True})
        signed.raise_for_status()
        arrived, cursor = await waiting
        times.append(arrived - started)
    return summary_ms(times)


def _median(runs: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 2)


async def run(stack, *, rate: float, seconds: float, runs: int, uploads: int, probes: int,
              progress=print) -> dict[str, Any]:
    from yigongti_kit.settings import KitSettings, kafka_client_kwargs
    from yigongti_kit.terminal import TerminalClient

    service = stack.services["diagnosis"]
    settings = KitSettings(service_name="bench", kafka_bootstrap_servers=stack.bootstrap,
                           kafka_broker_kind=stack.broker_kind)
    producer = AIOKafkaProducer(**kafka_client_kwargs(settings, "producer"))
    await producer.start()
    events = Events(kafka_client_kwargs(settings, "consumer"),
                    stack.topic("diagnosis.events.v1"))
    await events.start()
    terminal = TerminalClient(stack.keys.signer(), producer, stack.topic("diagnosis.intake.v1"))
    parts: dict[str, list[dict]] = {"stat": [], "upload": [], "critical": []}
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=120) as http:
            for i in range(runs):
                progress(f"run {i + 1}/{runs}: STAT requests at {rate:.0f}/s for {seconds} s …")
                parts["stat"].append(await stat_to_worklist(http, stack.keys, terminal, events,
                                                            rate=rate, seconds=seconds))
                progress(f"run {i + 1}/{runs}: {uploads} distinct uploads, each measured …")
                parts["upload"].append(await upload_and_measure(http, stack.keys, count=uploads,
                                                                seed0=1000 * (i + 1)))
                progress(f"run {i + 1}/{runs}: {probes} critical findings to the waiting feed …")
                parts["critical"].append(await critical_to_feed(http, stack.keys,
                                                                probes=probes))
    finally:
        await events.stop()
        await producer.stop()
    workers = worker_pids(service.pid)
    return {
        "runs": runs,
        "stat_to_worklist": {"p50_ms": _median(parts["stat"], "p50_ms"),
                             "p99_ms": _median(parts["stat"], "p99_ms"),
                             "requests_per_run": parts["stat"][0]["count"],
                             "offered_per_s": rate,
                             "achieved_per_s": _median(parts["stat"], "achieved_per_s"),
                             "target_p99_ms": 100},
        "upload_and_measure": {"recordings_per_s": _median(parts["upload"], "recordings_per_s"),
                               "p50_ms": _median(parts["upload"], "p50_ms"),
                               "p99_ms": _median(parts["upload"], "p99_ms"),
                               "uploads_per_run": uploads},
        "critical_to_feed": {"p50_ms": _median(parts["critical"], "p50_ms"),
                             "p99_ms": _median(parts["critical"], "p99_ms"),
                             "probes_per_run": parts["critical"][0]["count"],
                             "target_p99_ms": 100},
        "memory": {"service_peak_rss_mib": peak_rss_mib(service.pid),
                   "worker_peak_rss_mib": max((peak_rss_mib(p) or 0 for p in workers),
                                              default=None),
                   "target_service_mib": 150},
    }


def report(figures: dict[str, Any]) -> str:
    s, u, c, m = (figures[k] for k in ("stat_to_worklist", "upload_and_measure",
                                       "critical_to_feed", "memory"))
    return "\n".join([
        f"diagnosis bench (medians of {figures['runs']} runs):",
        f"  STAT request → worklist (event stream) at {s['offered_per_s']:.0f}/s offered "
        f"({s['achieved_per_s']}/s sent), {s['requests_per_run']} requests/run: "
        f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms (target p99 < 100 ms)",
        f"  upload + measurement: {u['recordings_per_s']} recordings/s, p50 {u['p50_ms']} ms, "
        f"p99 {u['p99_ms']} ms ({u['uploads_per_run']} distinct recordings/run)",
        f"  report signed → critical finding in the clinic's waiting feed: p50 {c['p50_ms']} ms,"
        f" p99 {c['p99_ms']} ms ({c['probes_per_run']} probes/run; target p99 < 100 ms)",
        f"  peak RSS: service {m['service_peak_rss_mib']} MiB (target < 150), "
        f"analysis worker {m['worker_peak_rss_mib']} MiB",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yigongti_deploy.bench_diagnosis",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="STAT requests/s")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed window per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--uploads", type=int, default=5, help="measured uploads per run")
    parser.add_argument("--probes", type=int, default=20, help="critical findings per run")
    parser.add_argument("--run-dir", type=Path, default=Path(".run"))
    args = parser.parse_args(argv)
    from yigongti_kit.service import event_loop_runner

    with event_loop_runner() as runner:
        return runner.run(_main(args))


async def _main(args) -> int:
    from .stack import Stack

    stamp = time.strftime("%Y%m%d-%H%M%S")
    stack = Stack(args.run_dir / f"bench-diagnosis-{stamp}", services=["diagnosis"])
    print("starting the embedded stack (diagnosis) …", flush=True)
    await stack.start()
    try:
        figures = await run(stack, rate=args.rate, seconds=args.seconds, runs=args.runs,
                            uploads=args.uploads, probes=args.probes,
                            progress=lambda m: print(m, flush=True))
    except Exception as exc:  # noqa: BLE001 - report with the service's log, exit non-zero
        print(f"bench FAILED: {exc!r}", file=sys.stderr)
        print(stack.services["diagnosis"].log_tail(), file=sys.stderr)
        return 1
    finally:
        await stack.stop()
    print(report(figures))
    path = args.run_dir / f"bench-diagnosis-{stamp}.json"
    path.write_text(json.dumps(figures, indent=2))
    print(f"figures: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

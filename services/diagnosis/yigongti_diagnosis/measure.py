"""ECG measurements, computed in a worker process, never on the event loop.

`import neurokit2` alone costs ~200 MB and several seconds, and a 12-lead
analysis takes CPU seconds; so the service's process never imports it. An
`Analyser` owns one spawned worker process (a `ProcessPoolExecutor` with a
``spawn`` context and one worker: a fork would copy the service's event loop,
sockets and pool into the child). The worker imports `analysis` (and with it
neurokit2) on its first task; `start()` makes that first task a warm-up so the
first upload does not pay for it.

    async with Analyser() as analyser:
        measurements = await analyser.measure(recording)

Recordings travel to the worker in their stored form (`Recording.to_bytes`,
~120 kB for 10 s at 500 Hz), measurements come back as a small dataclass. A
worker that exceeds the timeout is killed and replaced; `AnalysisFailed` says
why (`timeout`, `worker_died`, `analysis_error`). The recording is still the
reader's to read without automatic measurements.

The measurement method and the QTc formula (Fridericia) are described in
`analysis.py`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from typing import Final

from .recording import Recording

QTC_FORMULA: Final = "Fridericia"  # QT / RR^(1/3); why: analysis.py
DEFAULT_TIMEOUT_S: Final = 60.0  # assumed: a 60 s, 2000 Hz recording takes well under this


@dataclass(frozen=True)
class Measurements:
    """What the analysis found. A figure that could not be measured is None and
    `withheld` names why (too_few_beats, implausible, t_end_not_found)."""

    heart_rate_bpm: float | None  # mean ventricular rate, 60 / mean RR
    rr_cv_percent: float | None  # RR regularity: SD / mean of the RR intervals
    longest_pause_s: float  # longest RR (or edge gap when longer)
    qrs_ms: float | None
    qt_ms: float | None
    qtc_ms: float | None  # Fridericia
    qtc_bazett_ms: float | None  # Bazett, for comparison with carts that print it
    beats: int
    detection_lead: str
    withheld: dict[str, str] = field(default_factory=dict)
    library: str = ""
    analysis_cpu_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {"qtc_formula": QTC_FORMULA}


class AnalysisFailed(Exception):
    """The worker produced no measurements: `reason` is timeout, worker_died or
    analysis_error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Memory:
    """Resident set sizes in MiB (current and peak) of this process and the worker."""

    parent_rss_mib: float
    parent_peak_mib: float
    worker_rss_mib: float | None
    worker_peak_mib: float | None


class Analyser:
    def __init__(self, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._timeout_s = timeout_s
        self._pool: ProcessPoolExecutor | None = None
        self._lock = asyncio.Lock()  # one task at a time: the worker is single

    async def __aenter__(self) -> Analyser:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Spawn the worker and import neurokit2 there (seconds, once)."""
        await self._run(_warm_up)

    async def measure(self, recording: Recording) -> Measurements:
        return await self._run(_measure, recording.to_bytes())

    async def memory(self) -> Memory:
        parent = _rss()
        worker = await self._run(_rss) if self._pool else (None, None)
        return Memory(parent_rss_mib=parent[0], parent_peak_mib=parent[1],
                      worker_rss_mib=worker[0], worker_peak_mib=worker[1])

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    async def _run(self, fn, *args):
        async with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._pool, fn, *args)
            try:
                return await asyncio.wait_for(future, self._timeout_s)
            except TimeoutError:
                self._kill()
                raise AnalysisFailed("timeout") from None
            except BrokenProcessPool:
                self._kill()
                raise AnalysisFailed("worker_died") from None
            except AnalysisFailed:
                raise
            except Exception:
                raise AnalysisFailed("analysis_error") from None

    def _kill(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # ProcessPoolExecutor has no public way to stop a running task before
        # Python 3.14 (kill_workers); its worker processes are in _processes.
        for process in list((pool._processes or {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)


# --- run in the worker ------------------------------------------------------------

def _warm_up() -> None:
    from . import analysis  # noqa: F401  (imports neurokit2)


def _measure(blob: bytes) -> Measurements:
    from . import analysis

    return analysis.measure(Recording.from_bytes(blob))


def _rss() -> tuple[float, float]:
    """(current, peak) resident set size of the calling process in MiB (Linux:
    VmRSS and VmHWM; elsewhere the peak from getrusage for both)."""
    found: dict[str, float] = {}
    try:
        with open(f"/proc/{os.getpid()}/status") as status:
            for line in status:
                key = line.split(":")[0]
                if key in ("VmRSS", "VmHWM"):
                    found[key] = int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = found.get("VmHWM", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return (round(found.get("VmRSS", peak), 1), round(peak, 1))

def main() -> None:
    """``python -m yigongti_diagnosis.measure [FILE.dcm|FILE.csv]``: measure one
    recording (default: pydicom's waveform_ecg.dcm) in the worker and print the
    figures, the timings and both processes' memory as JSON."""
    import json
    import sys
    import time

    from .recording import MEDIA_CSV, MEDIA_DICOM, parse

    if len(sys.argv) > 1:
        path = sys.argv[1]
    else:
        from pydicom.data import get_testdata_file
        path = get_testdata_file("waveform_ecg.dcm")
    with open(path, "rb") as f:
        data = f.read()

    async def run() -> dict:
        started = time.perf_counter()
        recording = parse(data, MEDIA_CSV if path.endswith(".csv") else MEDIA_DICOM)
        parsed = time.perf_counter()
        async with Analyser() as analyser:
            warm = time.perf_counter()
            measurements = await analyser.measure(recording)
            measured = time.perf_counter()
            memory = await analyser.memory()
        return {
            "measurements": measurements.to_dict(),
            "parse_s": round(parsed - started, 3),
            "worker_start_s": round(warm - parsed, 3),
            "measure_wall_s": round(measured - warm, 3),
            "memory_mib": asdict(memory),
            "parent_imported_neurokit2": "neurokit2" in sys.modules,
        }

    print(json.dumps(asyncio.run(run()), indent=2))


if __name__ == "__main__":
    main()

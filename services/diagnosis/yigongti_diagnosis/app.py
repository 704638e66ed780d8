"""Wiring of the diagnosis service: handlers, timers, routes, migrations and the
ECG analysis worker onto the kit runtime."""

from __future__ import annotations

import asyncio
import logging
from importlib.resources import files
from pathlib import Path

from yigongti_kit.service import ServiceSpec, run_service

from . import critical, imaging, worklist
from .api import add_routes
from .handlers import HANDLERS
from .workstation.routes import mount as mount_workstation

log = logging.getLogger(__name__)


async def start_analyser(runtime):
    """The measurement worker process (measure.py): spawned now, neurokit2
    imported there in the background so the first upload does not wait for it."""
    from .measure import Analyser

    analyser = Analyser()
    runtime.app.state.analyser = analyser
    warm = asyncio.create_task(analyser.start())

    async def stop() -> None:
        if not warm.done():
            warm.cancel()
        await analyser.close()

    return stop


def _routes(app) -> None:
    add_routes(app)
    mount_workstation(app)  # the diagnostician's workstation pages (workstation/)


def spec() -> ServiceSpec:
    return ServiceSpec(
        name="diagnosis",
        aggregatetype="diagnosis_request",
        migrations=Path(str(files("yigongti_diagnosis") / "migrations")),
        handlers=HANDLERS,
        timer_handlers={worklist.LEASE_TIMER: worklist.on_lease_expiry,
                        worklist.OVERDUE_TIMER: worklist.on_overdue,
                        critical.ESCALATION_TIMER: critical.on_escalation,
                        imaging.RECHECK_TIMER: imaging.on_recheck},
        routes=_routes,
        extra=start_analyser,
    )


def main() -> None:
    run_service(spec)


if __name__ == "__main__":
    main()

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
ANALYSER = "analyser"  # the readiness component of the measurement worker


async def start_analyser(runtime):
    """The measurement worker process (measure.py): spawned now, neurokit2
    imported there in the background so the first upload does not wait for it.
    /readyz lists it as component "analyser" (not required: uploads are
    accepted meanwhile and measured once it is warm), so ops and the demo see
    when an ECG would be measured at once."""
    from .measure import Analyser

    analyser = Analyser()
    runtime.app.state.analyser = analyser
    runtime.health.set_ready(ANALYSER, False, "importing neurokit2")

    async def warm_up() -> None:
        try:
            await analyser.start()
        except Exception as exc:  # noqa: BLE001 - measured later, or read without
            log.error("the ECG measurement worker failed to start: %r", exc)
            runtime.health.set_ready(ANALYSER, False, "worker failed to start")
            return
        runtime.health.set_ready(ANALYSER, True)

    warm = asyncio.create_task(warm_up())

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

"""Wiring of the settlement service: intake handlers, the charges it reads
from the lab and diagnosis, routes and migrations onto the kit runtime."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from yigongti_kit.service import ServiceSpec, run_service

from .api import add_routes
from .charges import SUBSCRIPTIONS
from .handlers import HANDLERS


def spec() -> ServiceSpec:
    return ServiceSpec(
        name="settlement",
        aggregatetype="settlement",
        migrations=Path(str(files("yigongti_settlement") / "migrations")),
        handlers=HANDLERS,
        subscriptions=SUBSCRIPTIONS,
        # The intake carries what no counter waits on (a discharge settlement
        # under treat first, pay later; a back-office reversal): see charges.py.
        intake_fetch_max_wait_ms=100,
        # The counter has its answer over HTTP; the events (the office's
        # view, the clinics' feed) may wait 20 ms to leave in batches: at 80
        # settlements/s the relay's queries and produce requests, one per
        # event at a 2 ms pause, were a third of the service's CPU.
        relay_min_wait_s=0.02,
        routes=add_routes,
        extra=_load_keys,
    )


async def _load_keys(runtime):
    """Fail at start, not at the first patient, when a key file is missing."""
    from . import config

    config.current()
    return None


def main() -> None:
    run_service(spec)


if __name__ == "__main__":
    main()

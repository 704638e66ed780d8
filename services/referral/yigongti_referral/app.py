"""Wiring of the referral service (双向转诊): intake handlers, the
subscriptions to the diagnosis and lab services' events, the machine's
durable timers, routes and migrations onto the kit runtime."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from yigongti_kit.service import ServiceSpec, run_service

from . import transitions
from .api import add_routes
from .handlers import HANDLERS
from .upstream import SUBSCRIPTIONS


def spec() -> ServiceSpec:
    return ServiceSpec(
        name="referral",
        aggregatetype="referral_case",
        migrations=Path(str(files("yigongti_referral") / "migrations")),
        handlers=HANDLERS,
        timer_handlers={transitions.TIMER_KIND: transitions.on_timer},
        routes=add_routes,
        subscriptions=SUBSCRIPTIONS,
    )


def main() -> None:
    run_service(spec)


if __name__ == "__main__":
    main()

"""Wiring of the lab service: handlers, routes and migrations onto the kit runtime."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from yigongti_kit.service import ServiceSpec, run_service

from . import critical, hl7_listener, parking, receipt
from .api import add_routes
from .handlers import HANDLERS


def spec() -> ServiceSpec:
    return ServiceSpec(
        name="lab",
        aggregatetype="lab_order",
        migrations=Path(str(files("yigongti_lab") / "migrations")),
        handlers=HANDLERS,
        timer_handlers={parking.EXPIRY_TIMER: parking.on_expiry,
                        receipt.OVERDUE_TIMER: receipt.on_overdue,
                        critical.ESCALATION_TIMER: critical.on_escalation},
        routes=add_routes,
        extra=hl7_listener.start,
    )


def main() -> None:
    run_service(spec)


if __name__ == "__main__":
    main()

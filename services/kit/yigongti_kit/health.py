"""Liveness and readiness (DESIGN §6).

`/readyz` answers 200 while what HTTP needs is there (the database:
component "database", set by the runtime's probe), else 503: staff and
clinics' HTTP keeps serving through a broker outage. Its body lists every
component, ready or not, with a short reason (the consumer, each
subscription, the relay, the timers, the broker), so ops see what waits.
While shutting down, "shutdown" makes it 503 too; while starting,
"listening" does, until every listener of the process (HTTP, metrics, the
lab's MLLP port) is bound, so a process that is ready stays up.

`/healthz` answers 200 while every part of the runtime that must run is
alive, else 503 naming it: a part that died for good (a subscriber whose poll
loop ended, the relay's or the timer poller's task, a database login failing
longer than the setting allows) makes the pod restart. Checks are functions
evaluated on each call, so a death shows within one probe.

Reasons are short codes or phrases, never data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.responses import JSONResponse

# Components whose failure makes the service not ready: HTTP cannot work without them.
REQUIRED = frozenset({"database", "listening", "shutdown"})


@dataclass
class _Check:
    ready: bool
    reason: str | None


class Health:
    """Named readiness components and liveness checks of one process."""

    def __init__(self, *components: str):
        """`components` start not ready ("starting") until someone sets them."""
        self._checks: dict[str, _Check] = {name: _Check(False, "starting") for name in components}
        self._alive: dict[str, Callable[[], str | None]] = {}

    def set_ready(self, name: str, ready: bool, reason: str | None = None) -> None:
        self._checks[name] = _Check(ready, None if ready else (reason or "not ready"))

    def add_liveness(self, name: str, check: Callable[[], str | None]) -> None:
        """`check()` returns None while `name` is alive, else why it is not."""
        self._alive[name] = check

    @property
    def ready(self) -> bool:
        """What HTTP needs is there."""
        return all(c.ready for name, c in self._checks.items() if name in REQUIRED)

    def failing(self) -> dict[str, str]:
        """Name -> reason of every component that is not ready (required or not)."""
        return {
            name: check.reason or "not ready"
            for name, check in sorted(self._checks.items())
            if not check.ready
        }

    def dead(self) -> dict[str, str]:
        """Name -> reason of every part that died for good."""
        found = {}
        for name, check in sorted(self._alive.items()):
            reason = check()
            if reason is not None:
                found[name] = reason
        return found

    def components(self) -> dict[str, dict[str, object]]:
        return {name: {"ready": c.ready, **({"reason": c.reason} if c.reason else {}),
                       "required": name in REQUIRED}
                for name, c in sorted(self._checks.items())}

    def router(self) -> APIRouter:
        """/healthz and /readyz for this Health."""
        router = APIRouter(tags=["health"])

        @router.get("/healthz")
        async def healthz() -> JSONResponse:
            dead = self.dead()
            if dead:
                return JSONResponse({"status": "dead", "failing": dead}, status_code=503)
            return JSONResponse({"status": "ok"})

        @router.get("/readyz")
        async def readyz() -> JSONResponse:
            body = {"status": "ready" if self.ready else "unavailable",
                    "failing": self.failing(), "components": self.components()}
            return JSONResponse(body, status_code=200 if self.ready else 503)

        return router

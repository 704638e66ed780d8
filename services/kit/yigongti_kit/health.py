"""Liveness and readiness.

`/healthz` answers 200 while the process runs (liveness: restart me if not).
`/readyz` answers 200 when every registered component is ready, else 503 with
the failing components and their reasons (readiness: send me no traffic). The
consumer marks "database" or "broker" not ready while it retries an
infrastructure fault; shutdown marks "shutdown" not ready while it drains.
Reasons are short codes or phrases, never data.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.responses import JSONResponse


@dataclass
class _Check:
    ready: bool
    reason: str | None


class Health:
    """Named readiness checks of one process."""

    def __init__(self, *components: str):
        """`components` start not ready ("starting") until someone sets them."""
        self._checks: dict[str, _Check] = {name: _Check(False, "starting") for name in components}

    def set_ready(self, name: str, ready: bool, reason: str | None = None) -> None:
        self._checks[name] = _Check(ready, None if ready else (reason or "not ready"))

    @property
    def ready(self) -> bool:
        return all(check.ready for check in self._checks.values())

    def failing(self) -> dict[str, str]:
        """Name -> reason of every component that is not ready."""
        return {
            name: check.reason or "not ready"
            for name, check in sorted(self._checks.items())
            if not check.ready
        }

    def router(self) -> APIRouter:
        """/healthz and /readyz for this Health."""
        router = APIRouter(tags=["health"])

        @router.get("/healthz")
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        @router.get("/readyz")
        async def readyz() -> JSONResponse:
            failing = self.failing()
            if failing:
                return JSONResponse({"status": "unavailable", "failing": failing}, status_code=503)
            return JSONResponse({"status": "ready"})

        return router

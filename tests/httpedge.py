"""A small app built like a service's (kit HTTP edge tests, issue 9): a body
with constraints, a path parameter, a query, a route with a bug that quotes
what it was sent; a token for it; and the server-side log text of a test."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Annotated

from fastapi import Depends
from pydantic import BaseModel, ConfigDict, StringConstraints
from yigongti_kit.auth import Principal, generate_keypair, issue_token, require_principal
from yigongti_kit.http import create_http_app
from yigongti_kit.settings import KitSettings

PRIVATE, PUBLIC = generate_keypair()
CLIENT_LOGGERS = ("httpx", "httpcore")
SECRET = "Zhang-San-650102199001011234"  # stands for any value a caller sends


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(pattern=r"^[a-z]{1,8}$")]
    value: Decimal | None = None
    count: int = 0


def make_app(**settings):
    app = create_http_app("test", KitSettings(service_name="lab", auth_public_key=PUBLIC,
                                              **settings))

    @app.post("/things/{thing_id}")
    async def post_thing(thing_id: str, body: Thing,
                         principal: Principal = Depends(require_principal)):
        return {"thing_id": thing_id, "name": body.name}

    @app.get("/things/{thing_id}")
    async def get_thing(thing_id: str, q: str = "",
                        principal: Principal = Depends(require_principal)):
        return {"thing_id": thing_id}

    @app.get("/boom")
    async def boom(q: str = "", principal: Principal = Depends(require_principal)):
        raise ValueError(f"cannot handle {q!r}")  # a bug that quotes what it was sent

    return app


def bearer() -> dict[str, str]:
    token = issue_token(PRIVATE, user="u1", institution="652325-B01", roles=["clinician"],
                        audience="lab")
    return {"Authorization": f"Bearer {token}"}


def logged(caplog) -> str:
    """Everything the server side logged, exception text included (the test's
    own HTTP client logs the URLs it calls: not the service's logs)."""
    handler = logging.Handler()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    return "\n".join(handler.format(r) for r in caplog.records
                     if not r.name.startswith(CLIENT_LOGGERS))

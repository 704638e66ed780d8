"""Test support for the diagnostician's workstation: the diagnosis service with
the development user file (two replicas on one database), sign-in over plain
HTTP, and Debian's Chromium driven by Playwright (never `playwright install`)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import httpx
import pytest
from diagflow import settings_from, start_dx
from yigongti_deploy.embedded import free_port
from yigongti_kit.service import ServiceRuntime

ROOT = Path(__file__).resolve().parents[1]
USERS_FILE = ROOT / "deploy" / "dev" / "workstation_users.yaml"
# Screenshots and the like, kept with the test output (YGT_TEST_OUTPUT, else .run/).
OUTPUT = Path(os.environ.get("YGT_TEST_OUTPUT", ROOT / ".run" / "test-output")) / "workstation"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WS_ENV = {"WORKSTATION_USERS_FILE": str(USERS_FILE), "WORKSTATION_COOKIE_SECURE": "false"}


def password(user: str) -> str:
    return f"dev-{user}"  # the development file's rule (deploy/dev/workstation_users.yaml)


def chromium_or_skip() -> str:
    """The browser's path; a missing Chromium skips, except under CI=true."""
    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMIUM)):
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true: /usr/bin/chromium is missing (make test-setup installs it)")
        pytest.skip("no /usr/bin/chromium (make test-setup installs it)")
    return CHROMIUM


class Replica:
    """One more diagnosis service process-in-process on the same schema and topics."""

    def __init__(self, env: dict) -> None:
        from yigongti_diagnosis.app import spec

        self.runtime = ServiceRuntime(spec(), settings_from(dict(env, HTTP_PORT=str(free_port()))))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.runtime.settings.http_port}"


async def start_ws(database_url, kafka_bootstrap, broker_kind, dev_keys, *, replicas: int = 1,
                   pacs_url: str | None = None):
    """(dx, [base urls], cleanup): the service with the workstation, and more replicas."""
    saved = {k: os.environ.get(k) for k in WS_ENV}
    os.environ.update(WS_ENV)
    dx, env, cleanup = await start_dx(database_url, kafka_bootstrap, broker_kind, dev_keys,
                                      pacs_url=pacs_url)
    extra = []
    for _ in range(replicas - 1):
        replica = Replica(env)
        await replica.runtime.start()
        extra.append(replica)

    async def stop() -> None:
        for replica in extra:
            await replica.runtime.stop()
        await cleanup()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    bases = [f"http://127.0.0.1:{dx.settings.http_port}"] + [r.base for r in extra]
    return dx, bases, stop


def _hidden_csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def sign_in(base: str, user: str, secret: str | None = None) -> tuple[httpx.AsyncClient,
                                                                           httpx.Response]:
    """An HTTP client signed in as `user` (cookies kept), and the sign-in answer."""
    client = httpx.AsyncClient(base_url=base, timeout=30)
    page = await client.get("/ws/login")
    pre = page.cookies.get("ygt_ws_pre")  # sent by hand: a Secure cookie over plain HTTP too
    answer = await client.post("/ws/login", headers={"Cookie": f"ygt_ws_pre={pre}"}, data={
        "csrf": _hidden_csrf(page.text), "user": user,
        "password": password(user) if secret is None else secret})
    return client, answer


async def csrf_of(client: httpx.AsyncClient) -> str:
    return _hidden_csrf((await client.get("/ws/worklist")).text)

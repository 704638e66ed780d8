import httpx
from fastapi import FastAPI
from yigongti_kit.health import Health


async def get(health: Health, path: str) -> httpx.Response:
    app = FastAPI()
    app.include_router(health.router())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        return await client.get(path)


async def test_liveness_answers_while_not_ready():
    health = Health("database")
    assert (await get(health, "/healthz")).status_code == 200


async def test_components_start_not_ready():
    response = await get(Health("database", "consumer"), "/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == {"consumer": "starting", "database": "starting"}


async def test_ready_when_every_component_is():
    health = Health("database")
    health.set_ready("database", True)
    health.set_ready("consumer", True)
    response = await get(health, "/readyz")
    assert response.status_code == 200 and health.ready


async def test_a_failing_component_http_does_not_need_is_shown_but_keeps_readiness():
    """A broker outage must not take staff and clinics' HTTP out (issue 8 item 13)."""
    health = Health()
    health.set_ready("database", True)
    health.set_ready("broker", False, "unreachable")
    response = await get(health, "/readyz")
    assert response.status_code == 200
    assert response.json()["failing"] == {"broker": "unreachable"}
    assert response.json()["components"]["broker"] == {
        "ready": False, "reason": "unreachable", "required": False}
    health.set_ready("database", False, "ConnectionRefusedError")
    assert (await get(health, "/readyz")).status_code == 503


async def test_liveness_fails_naming_the_part_that_died():
    health = Health()
    state = {"relay": None}
    health.add_liveness("relay", lambda: state["relay"])
    assert (await get(health, "/healthz")).status_code == 200
    state["relay"] = "task ended"
    response = await get(health, "/healthz")
    assert response.status_code == 503
    assert response.json()["failing"] == {"relay": "task ended"}

"""The workstation in headless Chromium (Debian's /usr/bin/chromium driven by the
pinned playwright; never `playwright install`), against the real stack: two
replicas of the diagnosis service on one database, one reader on each.

Checks: sign-in; a STAT ECG arriving while the page is open appears at the top
without a reload (server-sent events fed from the database, so a claim on one
replica shows on the other's page); claim; the 12-lead trace and the
measurements; the trace's geometry (grid at one px/mm, 250 mm rhythm strip for
10 s, 10 mm calibration pulse, lead II drawn height = its mV range x 10 mm);
signing an anterior STEMI as critical (the conclusion sets the flag, the page
asks for confirmation), after which the study leaves both readers' queues; the
page's requests never leave the service. Screenshots go to the test output.
"""

from __future__ import annotations

import importlib.metadata
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from diagflow import CLINIC, ecg_request, until
from wsflow import CHROMIUM_ARGS, OUTPUT, chromium_or_skip, password

PLAYWRIGHT_VERSION = "1.62.0"  # the kit's dev extras; proven with Debian 12's chromium 156
READER, SECOND = "STAFF-2001", "STAFF-2002"


@pytest_asyncio.fixture(scope="module")
async def browser():
    path = chromium_or_skip()
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS,
                                           headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def _signed_in(browser, base: str, user: str):
    context = await browser.new_context(base_url=base, viewport={"width": 1500, "height": 1000},
                                        locale="zh-CN")
    page = await context.new_page()
    page.requests_seen = []
    page.on("request", lambda r: page.requests_seen.append(r.url))
    await page.goto("/ws/worklist")
    assert page.url.endswith("/ws/login")
    await page.fill("#user", user)
    await page.fill("#password", password(user))
    await page.click("#login-submit")
    await page.wait_for_url("**/ws/worklist")
    await page.wait_for_selector('#live[data-state="live"]', timeout=20_000)
    return context, page


async def _stemi(ws) -> str:
    """A STAT ECG request with the SYNTHETIC anterior STEMI tracing, measured by the
    service's own analysis worker; its request id once queued."""
    from yigongti_diagnosis import store
    from yigongti_diagnosis.synthetic import synthetic_stemi

    rec = synthetic_stemi()
    measured = (await ws.runtime.app.state.analyser.measure(rec)).to_dict()
    async with ws.pool.acquire() as conn:
        ref = await store.store_recording(
            conn, institution=CLINIC, user="TERM-1", data=rec.to_bytes(),
            metadata=rec.metadata(), duration_s=rec.duration_s, measurements=measured,
            measure_error=None)
    req = ecg_request(ref, indications=("R07.4",),
                      symptom_onset=datetime.now(UTC) - timedelta(hours=1))
    await ws.terminal.publish(req)
    (queued,) = await ws.wait("diagnosis.queued.v1", req.request_id)
    assert queued["priority"] == "stat"
    return req.request_id


GEOMETRY = """() => {
  const svg = document.querySelector('#ecg');
  const centres = (sel, axis) => [...svg.querySelectorAll(sel)]
    .filter(l => axis === 'x' ? l.getAttribute('x1') === l.getAttribute('x2')
                              : l.getAttribute('y1') === l.getAttribute('y2'))
    .map(l => { const r = l.getBoundingClientRect();
                return axis === 'x' ? r.left + r.width / 2 : r.top + r.height / 2; })
    .sort((a, b) => a - b);
  const box = sel => { const r = document.querySelector(sel).getBoundingClientRect();
                       return {w: r.width, h: r.height}; };
  const rhythm = document.querySelector('#ecg-rhythm-II');
  return {
    allX: centres('line.ecg-grid-minor, line.ecg-grid-major', 'x'),
    allY: centres('line.ecg-grid-minor, line.ecg-grid-major', 'y'),
    majorX: centres('line.ecg-grid-major', 'x'),
    cal: box('#ecg-cal-0'), frame: box('#ecg-rhythm-frame'), rhythm: box('#ecg-rhythm-II'),
    mvMin: +rhythm.dataset.mvMin, mvMax: +rhythm.dataset.mvMax,
    startS: +rhythm.dataset.startS, endS: +rhythm.dataset.endS,
    speed: document.querySelector('#ecg-speed').textContent,
    gain: document.querySelector('#ecg-gain').textContent,
    leads: [...svg.querySelectorAll('path.ecg-trace')].map(p => p.dataset.lead),
  };
}"""


def _steps(centres: list[float]) -> list[float]:
    return [b - a for a, b in zip(centres, centres[1:], strict=False)]


def check_geometry(g: dict) -> float:
    """The ECG paper measured as drawn in the browser; returns px per mm."""
    steps = _steps(g["allX"]) + _steps(g["allY"])
    px_mm = sum(steps) / len(steps)
    assert px_mm > 1
    assert all(abs(s - px_mm) < 0.02 * px_mm for s in steps), "1 mm grid not at one px/mm"
    assert all(abs(s - 5 * px_mm) < 0.02 * px_mm for s in _steps(g["majorX"])), "5 mm lines"
    assert abs(g["frame"]["w"] / px_mm - 250) < 0.5, "rhythm strip is not 250 mm"
    assert abs((g["endS"] - g["startS"]) - 10) < 0.01, "rhythm strip is not 10 s"
    assert abs(g["cal"]["h"] / px_mm - 10) < 0.2, "calibration pulse is not 10 mm"
    expected_mm = (g["mvMax"] - g["mvMin"]) * 10
    drawn_mm = g["rhythm"]["h"] / px_mm
    assert abs(drawn_mm - expected_mm) <= 0.05 * expected_mm, (drawn_mm, expected_mm)
    assert g["speed"] == "25 mm/s" and g["gain"] == "10 mm/mV"
    assert sorted(set(g["leads"])) == sorted(["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2",
                                              "V3", "V4", "V5", "V6"])
    return px_mm


async def test_playwright_drives_debians_chromium(browser):
    OUTPUT.mkdir(parents=True, exist_ok=True)
    version = importlib.metadata.version("playwright")
    (OUTPUT / "versions.txt").write_text(f"playwright {version}\nchromium {browser.version}\n")
    assert version == PLAYWRIGHT_VERSION
    assert browser.version.split(".")[0] == "156", browser.version


@pytest.mark.timeout(180)
async def test_stat_ecg_live_claim_trace_and_critical_sign(ws, browser):
    OUTPUT.mkdir(parents=True, exist_ok=True)
    routine = (await ws.queued())["request_id"]
    ctx1, first = await _signed_in(browser, ws.bases[0], READER)
    ctx2, second = await _signed_in(browser, ws.bases[1], SECOND)
    for page in (first, second):
        await page.wait_for_selector(f"#row-{routine}")

    rid = await _stemi(ws)
    for page in (first, second):  # no reload: the event stream brings it
        await page.wait_for_selector(f"#row-{rid}", timeout=20_000)
        top = page.locator("#worklist-rows tr").first
        assert await top.get_attribute("data-request-id") == rid
        assert await top.get_attribute("data-priority") == "stat"
    await first.screenshot(path=OUTPUT / "worklist.png", full_page=True)

    await first.click(f"#claim-{rid}")
    await first.wait_for_url(f"**/ws/studies/{rid}")
    await second.wait_for_selector(f'#row-{rid}[data-claimed-by="{READER}"]', timeout=20_000)
    assert await second.locator(f"#claim-{rid}").count() == 0

    await first.wait_for_selector("#ecg-paper svg#ecg")
    assert await first.locator("#ecg-paper path.ecg-trace").count() == 13  # 12 leads + rhythm
    rate = first.locator('#measurements tr[data-measure="heart_rate_bpm"] td')
    assert 60 < float(await rate.inner_text()) < 100
    assert await first.locator("#measurements-none").count() == 0
    assert await first.locator("#priority-reasons li").first.get_attribute(
        "data-reason") == "chest_pain_under_12h"
    assert await first.locator("#callback").inner_text() == "0994-7000101"
    check_geometry(await first.evaluate(GEOMETRY))
    # The patient's earlier ECG at this centre, drawn beside for comparison.
    assert await first.locator("#previous-ecg").get_attribute("data-request-id") == routine
    assert await first.locator("#previous-ecg svg#prev-ecg path.ecg-trace").count() == 13
    await first.screenshot(path=OUTPUT / "ecg-view.png", full_page=True)

    await first.fill("#findings", "ST elevation V1-V4")
    await first.fill("#impression", "acute anterior STEMI")
    await first.select_option("#conclusion", "I21.0")
    assert await first.is_checked("#critical"), "a critical conclusion sets the flag"
    await first.locator("#report").screenshot(path=OUTPUT / "report-form.png")
    dialogs = []

    async def accept(dialog):
        dialogs.append(dialog.message)
        await dialog.accept()

    first.on("dialog", accept)
    await first.click("#sign")
    await first.wait_for_url("**/ws/worklist")
    assert dialogs, "signing a critical report asks for confirmation"
    for page in (first, second):
        await page.wait_for_selector(f"#row-{rid}", state="detached", timeout=20_000)
    assert await ws.fetchval("SELECT critical FROM reports WHERE request_id = $1", rid) is True
    assert await ws.fetchval("SELECT conclusion FROM critical_findings WHERE request_id = $1",
                             rid) == "I21.0"
    await first.goto(f"/ws/studies/{rid}")
    state = first.locator("#critical-state")
    assert await state.get_attribute("data-acknowledged") == "0"
    await first.screenshot(path=OUTPUT / "signed-critical.png", full_page=True)

    for page, base in ((first, ws.bases[0]), (second, ws.bases[1])):
        strays = [u for u in page.requests_seen if not u.startswith(base + "/ws/")]
        assert not strays, strays  # never the PACS, nor anything else
    await ctx1.close()
    await ctx2.close()


async def test_other_centre_sees_nothing_and_a_cookie_is_refused_after_sign_out(ws, browser):
    rid = (await ws.queued())["request_id"]
    context, page = await _signed_in(browser, ws.bases[1], "STAFF-7001")
    assert await page.locator(f"#row-{rid}").count() == 0
    answer = await page.goto(f"/ws/studies/{rid}")
    assert answer.status == 404
    assert await page.locator('#notice[data-key="missing"]').count() == 1
    cookies = {c["name"]: c for c in await context.cookies()}
    session = cookies["ygt_ws"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"

    await page.goto("/ws/worklist")
    await page.click("#logout")
    await page.wait_for_url("**/ws/login")
    replay = await browser.new_context(base_url=ws.bases[0])
    await replay.add_cookies([{**session, "expires": -1}])
    again = await replay.new_page()
    await again.goto("/ws/worklist")
    assert again.url.endswith("/ws/login")
    await replay.close()
    await context.close()


async def test_supervisor_sees_overdue_and_unacknowledged_critical(ws, browser):
    """Last in the module: it moves the database clock past the due and ack times."""
    stat = (await ws.queued(priority_hint="stat"))["request_id"]
    stemi = await ws.fetchval("SELECT request_id FROM critical_findings WHERE conclusion = 'I21.0'")
    await ws.shift_clock(timedelta(minutes=11))
    await until(lambda: ws.fetchval("SELECT step >= 1 FROM critical_findings WHERE request_id = $1",
                                    stemi), what="the first escalation step")
    context, page = await _signed_in(browser, ws.bases[1], "STAFF-2900")
    await page.click("#supervisor-link")
    await page.wait_for_url("**/ws/supervisor")
    assert await page.locator(f"#overdue-{stat}").count() == 1
    row = page.locator(f"#critical-{stemi}")
    assert await row.get_attribute("data-step") == "1"
    assert await row.get_attribute("data-escalated-to") == "requesting_clinic"
    await page.screenshot(path=OUTPUT / "supervisor.png", full_page=True)
    # A reader without the role is refused the view.
    reader_context, reader = await _signed_in(browser, ws.bases[0], READER)
    assert (await reader.goto("/ws/supervisor")).status == 403
    await reader_context.close()
    await context.close()

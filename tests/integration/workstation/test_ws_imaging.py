"""An imaging study in the workstation: its series shown with previews rendered by
the PACS (Orthanc's DICOMweb) and fetched through the service; the browser's
requests never go to the PACS; another centre's reader gets 'missing' for a
preview too, and each preview view is audited."""

from __future__ import annotations

import secrets

import pytest_asyncio
from diagflow import imaging_request
from wsflow import CHROMIUM_ARGS, OUTPUT, chromium_or_skip, password, sign_in, start_ws
from yigongti_deploy.dicom_samples import make_study, upload_study

IMAGING_READER = "STAFF-3001"


@pytest_asyncio.fixture(scope="module")
async def wsi(database_url, kafka_bootstrap, broker_kind, dev_keys, orthanc):
    dx, bases, stop = await start_ws(database_url, kafka_bootstrap, broker_kind, dev_keys,
                                     pacs_url=orthanc)
    dx.bases = bases
    try:
        yield dx
    finally:
        await stop()


async def test_previews_come_through_the_service(wsi, orthanc):
    study = make_study("CT", "ACC" + secrets.token_hex(4).upper(), series=2,
                       instances_per_series=1)
    await upload_study(orthanc, study)
    req = imaging_request("CT", study.study_uid, study.accession)
    await wsi.terminal.publish(req)
    await wsi.wait("diagnosis.queued.v1", req.request_id)
    rid = req.request_id

    path = chromium_or_skip()
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        context = await browser.new_context(base_url=wsi.bases[0],
                                            viewport={"width": 1200, "height": 900})
        page = await context.new_page()
        seen: list[str] = []
        page.on("request", lambda r: seen.append(r.url))
        await page.goto("/ws/login")
        await page.fill("#user", IMAGING_READER)
        await page.fill("#password", password(IMAGING_READER))
        await page.click("#login-submit")
        await page.wait_for_url("**/ws/worklist")
        await page.wait_for_selector(f"#row-{rid}")
        await page.goto(f"/ws/studies/{rid}")
        images = page.locator("#series figure.series img")
        assert await images.count() == 2
        preview = await images.first.get_attribute("src")
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#series img')]"
            ".every(i => i.complete && i.naturalWidth > 0)", timeout=20_000)
        OUTPUT.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=OUTPUT / "imaging-previews.png", full_page=True)
        await browser.close()
    assert not [u for u in seen if not u.startswith(wsi.bases[0] + "/ws/")], seen
    assert await wsi.fetchval("SELECT count(*) FROM ws_audit WHERE request_id = $1 "
                              "AND action = 'preview'", rid) == 2

    ecg_reader, _ = await sign_in(wsi.bases[0], "STAFF-2001")
    assert (await ecg_reader.get(preview)).status_code == 404  # another centre: missing
    await ecg_reader.aclose()
    mine, _ = await sign_in(wsi.bases[0], IMAGING_READER)
    answer = await mine.get(preview)
    assert answer.status_code == 200 and answer.headers["content-type"] in ("image/jpeg",
                                                                            "image/png")
    assert (await mine.get(f"/ws/studies/{rid}/series/1.2.3.4/preview")).status_code == 404
    await mine.aclose()

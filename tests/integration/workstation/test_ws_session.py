"""Sign-in, sessions, CSRF, scope and audit of the workstation over HTTP (two
replicas on one database: a session started on one is valid on the other)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from wsflow import csrf_of, sign_in

READER, OTHER_COUNTY = "STAFF-2001", "STAFF-7001"


def _cookie_header(answer) -> str:
    (line,) = [v for k, v in answer.headers.multi_items()
               if k.lower() == "set-cookie" and v.startswith("ygt_ws=")]
    return line


async def test_sign_in_cookie_flags_and_wrong_password(ws):
    base = ws.bases[0]
    client, answer = await sign_in(base, READER, secret="wrong")
    assert answer.status_code == 401
    assert "ygt_ws" not in client.cookies
    await client.aclose()
    client, answer = await sign_in(base, "NOBODY")
    assert answer.status_code == 401
    await client.aclose()

    client, answer = await sign_in(base, READER)
    assert answer.status_code == 303 and answer.headers["location"] == "/ws/worklist"
    flags = [f.strip().lower() for f in _cookie_header(answer).split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/ws" in flags
    assert "secure" not in flags  # development over plain HTTP (WORKSTATION_COOKIE_SECURE=false)
    page = await client.get("/ws/worklist")
    assert page.status_code == 200 and 'id="worklist"' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    await client.aclose()

    ws.runtime.app.state.ws_cookie_secure = True  # as in production
    try:
        client, answer = await sign_in(base, READER)
        assert "secure" in [f.strip().lower() for f in _cookie_header(answer).split(";")]
        await client.aclose()
    finally:
        ws.runtime.app.state.ws_cookie_secure = False


async def test_a_session_is_valid_on_every_replica_and_refused_after_sign_out(ws):
    client, _ = await sign_in(ws.bases[0], READER)
    cookie = client.cookies["ygt_ws"]
    other = client.__class__(base_url=ws.bases[1], cookies={"ygt_ws": cookie}, timeout=30)
    assert (await other.get("/ws/worklist")).status_code == 200  # no sticky sessions
    answer = await other.post("/ws/logout", data={"csrf": await csrf_of(other)})
    assert answer.status_code == 303
    for http in (client, other):
        http.cookies.set("ygt_ws", cookie)
        again = await http.get("/ws/worklist")
        assert again.status_code == 303 and again.headers["location"] == "/ws/login"
        assert (await http.get("/ws/worklist/rows")).status_code == 401
    assert await ws.fetchval("SELECT end_reason FROM ws_sessions WHERE ended_at IS NOT NULL "
                             "AND user_id = $1 ORDER BY ended_at DESC LIMIT 1",
                             READER) == "signed_out"
    await client.aclose()
    await other.aclose()


async def test_a_post_without_the_csrf_token_is_refused(ws):
    queued = await ws.queued()
    client, _ = await sign_in(ws.bases[0], READER)
    for data in ({}, {"csrf": "not-the-token"}):
        answer = await client.post(f"/ws/studies/{queued['request_id']}/claim", data=data)
        assert answer.status_code == 403 and 'data-key="csrf.refused"' in answer.text
    assert await ws.fetchval("SELECT status FROM requests WHERE request_id = $1",
                             queued["request_id"]) == "queued"
    # The sign-in form needs its own token too (login CSRF).
    fresh = client.__class__(base_url=ws.bases[0], timeout=30)
    answer = await fresh.post("/ws/login", data={"user": READER, "password": "dev-" + READER})
    assert answer.status_code == 403
    await fresh.aclose()
    # With the token it goes through.
    answer = await client.post(f"/ws/studies/{queued['request_id']}/claim",
                               data={"csrf": await csrf_of(client)})
    assert answer.status_code == 303
    assert await ws.fetchval("SELECT claimed_by FROM requests WHERE request_id = $1",
                             queued["request_id"]) == READER
    await client.aclose()


async def test_out_of_scope_is_missing_and_views_are_audited(ws):
    queued = await ws.queued()
    rid = queued["request_id"]
    mine, _ = await sign_in(ws.bases[0], READER)
    page = await mine.get(f"/ws/studies/{rid}")
    assert page.status_code == 200 and 'id="ecg-paper"' in page.text
    assert await ws.fetchval("SELECT count(*) FROM ws_audit WHERE request_id = $1 AND "
                             "user_id = $2 AND action = 'view'", rid, READER) == 1

    other, _ = await sign_in(ws.bases[1], OTHER_COUNTY)
    unknown = await other.get("/ws/studies/DX-nosuchrequest")
    theirs = await other.get(f"/ws/studies/{rid}")
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.text.replace(rid, "X") == unknown.text.replace("DX-nosuchrequest", "X")
    rows = (await other.get("/ws/worklist/rows")).text
    assert rid not in rows
    answer = await other.post(f"/ws/studies/{rid}/claim", data={"csrf": await csrf_of(other)})
    assert answer.status_code == 404
    assert await ws.fetchval("SELECT count(*) FROM scope_refusals WHERE request_id = $1 "
                             "AND user_id = $2", rid, OTHER_COUNTY) == 2
    assert await ws.fetchval("SELECT count(*) FROM ws_audit WHERE user_id = $1",
                             OTHER_COUNTY) == 0
    await mine.aclose()
    await other.aclose()


async def test_an_automatic_finding_that_raised_the_priority_is_shown_with_its_reason(ws):
    from diagflow import ecg_request

    measured = {"heart_rate_bpm": 31.0, "rr_cv_percent": 2.0, "longest_pause_s": 2.1,
                "qrs_ms": 98.0, "qt_ms": 460.0, "qtc_ms": 390.0, "qtc_bazett_ms": 380.0,
                "beats": 5, "detection_lead": "II", "withheld": {}}
    req = ecg_request(await ws.stored_recording(measurements=measured))
    await ws.terminal.publish(req)
    (queued,) = await ws.wait("diagnosis.queued.v1", req.request_id)
    assert queued["priority"] == "stat"
    client, _ = await sign_in(ws.bases[0], READER)
    page = (await client.get(f"/ws/studies/{req.request_id}")).text
    assert 'data-reason="ecg_ventricular_rate_below_35"' in page
    assert 'data-measure="heart_rate_bpm" data-breach="1"' in page
    assert 'data-measure="qrs_ms" data-breach="0"' in page
    await client.aclose()


async def test_amendment_needs_a_reason(ws):
    queued = await ws.queued()
    rid = queued["request_id"]
    client, _ = await sign_in(ws.bases[0], READER)
    csrf = await csrf_of(client)
    assert (await client.post(f"/ws/studies/{rid}/claim", data={"csrf": csrf})).status_code == 303
    report = {"csrf": csrf, "findings": "sinus rhythm", "impression": "normal",
              "conclusion": "ECG.NORMAL"}
    answer = await client.post(f"/ws/studies/{rid}/report", data=report)
    assert answer.status_code == 303, answer.text
    refused = await client.post(f"/ws/studies/{rid}/amend", data=report)
    assert refused.status_code == 422 and 'data-key="report.reason_needed"' in refused.text
    amended = await client.post(f"/ws/studies/{rid}/amend",
                                data={**report, "reason": "finding_added"})
    assert amended.status_code == 303
    assert await ws.fetchval("SELECT max(revision) FROM reports WHERE request_id = $1", rid) == 2
    await client.aclose()


async def test_claim_next_and_release(ws):
    client, _ = await sign_in(ws.bases[0], "STAFF-2002")
    csrf = await csrf_of(client)
    while True:  # drain what other tests left, so the next one claimed is the STAT
        answer = await client.post("/ws/claim-next", data={"csrf": csrf})
        if answer.headers["location"] == "/ws/worklist?none=1":
            break
    stat = (await ws.queued(priority_hint="stat"))["request_id"]
    answer = await client.post("/ws/claim-next", data={"csrf": csrf})
    assert answer.status_code == 303 and answer.headers["location"] == f"/ws/studies/{stat}"
    page = await client.get(f"/ws/studies/{stat}")
    assert 'id="report-form"' in page.text and 'id="release"' in page.text
    # Someone else's claim cannot be released, nor claimed again.
    other, _ = await sign_in(ws.bases[1], READER)
    other_csrf = await csrf_of(other)
    assert (await other.post(f"/ws/studies/{stat}/release",
                             data={"csrf": other_csrf})).status_code == 409
    assert (await other.post(f"/ws/studies/{stat}/claim",
                             data={"csrf": other_csrf})).status_code == 409
    answer = await client.post(f"/ws/studies/{stat}/release", data={"csrf": csrf})
    assert answer.status_code == 303 and answer.headers["location"] == "/ws/worklist"
    assert await ws.fetchval("SELECT status FROM requests WHERE request_id = $1",
                             stat) == "queued"
    await client.aclose()
    await other.aclose()


async def test_a_claim_waits_for_the_held_row_then_finds_it_taken(ws):
    """The service's one lock rule (locking.py) holds for the pages: a claim from
    the page waits while another transaction holds the request's row, then sees
    the claim that transaction made and answers 409."""
    rid = (await ws.queued())["request_id"]
    client, _ = await sign_in(ws.bases[0], READER)
    csrf = await csrf_of(client)
    async with ws.pool.acquire() as conn:
        held = conn.transaction()
        await held.start()
        await conn.execute("SELECT 1 FROM requests WHERE request_id = $1 FOR UPDATE", rid)
        claim = asyncio.create_task(client.post(f"/ws/studies/{rid}/claim", data={"csrf": csrf}))
        await asyncio.sleep(0.5)
        assert not claim.done(), "the claim must wait for the row"
        await conn.execute("UPDATE requests SET status = 'claimed', claimed_by = 'STAFF-2002' "
                           "WHERE request_id = $1", rid)
        await held.commit()
    answer = await claim
    assert answer.status_code == 409 and 'data-key="conflict"' in answer.text
    assert await ws.fetchval("SELECT claimed_by FROM requests WHERE request_id = $1",
                             rid) == "STAFF-2002"
    await client.aclose()


async def test_idle_session_times_out(ws):
    """Last in the module: it moves the database clock."""
    client, _ = await sign_in(ws.bases[0], READER)
    assert (await client.get("/ws/worklist")).status_code == 200
    await ws.shift_clock(timedelta(minutes=20))
    # The page's own refreshes are not the reader's activity: they keep nothing alive.
    assert (await client.get("/ws/worklist/rows")).status_code == 200
    await ws.shift_clock(timedelta(minutes=11))
    assert (await client.get("/ws/worklist/rows")).status_code == 401
    answer = await client.get("/ws/worklist")
    assert answer.status_code == 303 and answer.headers["location"] == "/ws/login"
    assert await ws.fetchval("SELECT count(*) FROM ws_sessions WHERE end_reason = 'timeout'") >= 1
    await client.aclose()

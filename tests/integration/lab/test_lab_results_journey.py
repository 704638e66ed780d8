"""The lab journey past receipt on the real broker and database (issue 3):
results from the lab centre's LIS with reference ranges and flags from the
catalogue, technical confirmation, verification with recognitions, the
report; results that come early are parked, results for a rejected tube are
refused, none is lost; the work queue at each stage; two physicians racing
to verify; scoping of everything to the ordering clinic and the lab centre."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from labflow import collected, order, payload, rejection_for
from labjourney import (
    GOOD,
    LAB_CENTRE,
    OTHER_CENTRE,
    OTHER_CLINIC,
    analyser_results,
    clinician,
    confirm,
    dispatch,
    feed_settled,
    fetchval,
    http,
    is_,
    lis,
    new_patient,
    obs,
    one,
    ordered_tube,
    physician,
    receive,
    report_results,
    seen,
    technologist,
    until,
    verified_order,
    verify,
)
from yigongti_contracts.common import Age, AgeUnit, Sex
from yigongti_lab import catalogue

ADULT = (Sex.male, Age(value=80, unit=AgeUnit.years))  # labflow.order()'s patient


def expected_range(code: str) -> tuple[str | None, str | None]:
    low, high = catalogue.reference_range(code, *ADULT)
    return (None if low is None else str(low), None if high is None else str(high))


def dec(text) -> Decimal | None:
    return None if text is None else Decimal(str(text))


async def test_full_journey_from_receipt_to_a_verified_report_with_recognitions(lab, dev_keys):
    o, t = await ordered_tube(lab, dev_keys, ("K", "NA", "CTNI"))
    await receive(lab, dev_keys, t.barcode)

    # K above its range, NA below it, troponin inside: H, L, N from the catalogue.
    reported = await report_results(lab, dev_keys, t.barcode,
                                    obs("K", "5.6"), obs("NA", "130"), obs("CTNI", "5"))
    by_code = {x["code"]: x for x in reported["observations"]}
    assert set(by_code) == {"K", "NA", "CTNI"}
    for code, value, flag in (("K", "5.6", "H"), ("NA", "130", "L"), ("CTNI", "5", "N")):
        low, high = expected_range(code)
        assert (dec(by_code[code]["reference_low"]), dec(by_code[code]["reference_high"])) == (
            dec(low), dec(high)), code
        assert by_code[code]["flag"] == flag == catalogue.flag(
            Decimal(value), catalogue.reference_range(code, *ADULT)).value
        assert by_code[code]["critical"] is False
    assert reported["order_id"] == o.order_id

    confirmed = await confirm(lab, dev_keys, t.barcode)
    assert confirmed["critical_values"] == []
    event = await one(lab, "results.confirmed.v1", barcode=t.barcode)
    assert sorted(event["observation_ids"]) == sorted(x["observation_id"]
                                                      for x in reported["observations"])
    assert event["confirmed_by"] == "tech-8"

    answer = await verify(lab, dev_keys, o.order_id)
    assert answer["revision"] == 1
    verified = await one(lab, "report.verified.v1", order_id=o.order_id)
    assert verified["verified_by"] == "phys-2"
    assert verified["ordering_institution"] == dev_keys.institution_id
    assert verified["lab_centre"] == LAB_CENTRE
    assert {x["code"] for x in verified["observations"]} == {"K", "NA", "CTNI"}
    # K and NA are on the recognition list; troponin is not.
    recognised = {r["code"]: r for r in verified["recognitions"]}
    assert set(recognised) == {c for c in ("K", "NA", "CTNI")
                               if catalogue.recognition_window(c) is not None} == {"K", "NA"}

    async with clinician(lab, dev_keys) as clinic:
        report = (await clinic.get(f"/orders/{o.order_id}/report")).json()
        order_view = (await clinic.get(f"/orders/{o.order_id}")).json()
    rows = {r["code"]: r for r in report["observations"]}
    assert set(rows) == {"K", "NA", "CTNI"}
    for code, flag in (("K", "H"), ("NA", "L"), ("CTNI", "N")):
        low, high = expected_range(code)
        assert (dec(rows[code]["reference_low"]), dec(rows[code]["reference_high"])) == (
            dec(low), dec(high))
        assert rows[code]["flag"] == flag
        assert rows[code]["verified_by"] == "phys-2" and rows[code]["status"] == "verified"
    assert [(r["revision"], r["by_staff"]) for r in report["revisions"]] == [(1, "phys-2")]
    # Every test verified: the order's status, derived from its tests, is completed.
    assert {t["status"] for t in order_view["tests"]} == {"verified"}
    assert [s["state"] for s in order_view["specimens"]] == ["verified"]
    assert order_view["status"] == "completed"


async def test_the_work_queue_shows_the_tube_in_the_bucket_of_its_stage(lab, dev_keys):
    async def bucket_of(barcode: str, institution: str = LAB_CENTRE) -> list[str]:
        async with technologist(lab, dev_keys, institution) as staff:
            answer = await staff.get("/worklist")
        assert answer.status_code == 200
        queue = answer.json()["queue"]
        return [name for name, tubes in queue.items()
                if barcode in [x["barcode"] for x in tubes]]

    o, t = await ordered_tube(lab, dev_keys, ("K", "CTNI"))
    assert await bucket_of(t.barcode) == ["in_transit"]
    assert await bucket_of(t.barcode, OTHER_CENTRE) == []   # another centre's queue
    await receive(lab, dev_keys, t.barcode)
    assert await bucket_of(t.barcode) == ["awaiting_results"]
    await report_results(lab, dev_keys, t.barcode, obs("K", "4.0"))   # one test of two
    assert await bucket_of(t.barcode) == ["awaiting_results"]
    await report_results(lab, dev_keys, t.barcode, obs("CTNI", "3"))
    assert await bucket_of(t.barcode) == ["awaiting_confirmation"]
    await confirm(lab, dev_keys, t.barcode)
    assert await bucket_of(t.barcode) == ["awaiting_verification"]
    await verify(lab, dev_keys, o.order_id)
    assert await bucket_of(t.barcode) == []
    async with clinician(lab, dev_keys) as clinic:
        assert (await clinic.get("/worklist")).status_code == 403


async def test_results_before_the_receipt_are_parked_and_applied_after_it(lab, dev_keys):
    o, t = await ordered_tube(lab, dev_keys, ("K", "NA"))
    sender = lis(lab, dev_keys)
    # Two runs (two analysers) before the technologist records the receipt.
    await sender.publish(analyser_results(t.barcode, obs("K", "4.4")))
    await sender.publish(analyser_results(t.barcode, obs("NA", "141"), analyser_id="AU5800-2"))
    await until(lambda: fetchval(lab, "SELECT count(*) = 2 FROM parked WHERE waiting_kind ="
                                      " 'received' AND waiting_key = $1", t.barcode),
                what="both runs parked")
    assert not seen(lab, "results.reported.v1", barcode=t.barcode)

    await receive(lab, dev_keys, t.barcode)
    found = await lab.events.wait_for(is_("results.reported.v1", barcode=t.barcode), count=2)
    lines = sorted(x["code"] for r in found for x in payload(r)["observations"])
    assert lines == ["K", "NA"]
    assert await fetchval(lab, "SELECT count(*) FROM parked") == 0
    assert await fetchval(lab, "SELECT state FROM specimens WHERE barcode = $1",
                          t.barcode) == "resulted"
    assert not seen(lab, "intake.rejected.v1")


async def test_results_known_only_by_barcode_wait_for_the_tube_and_its_receipt(lab, dev_keys):
    o = order(dev_keys.institution_id, tests=("K",), patient_ref=new_patient())
    t = collected(o, tests=("K",))
    ce_id = await lis(lab, dev_keys).publish(analyser_results(t.barcode, obs("K", "3.9")))
    await until(lambda: fetchval(lab, "SELECT count(*) FROM parked WHERE ce_id = $1", ce_id),
                what="result parked")
    for record in (o, t, dispatch(t.barcode)):
        await lab.terminal.publish(record)
    await one(lab, "specimen.in_transit.v1", barcode=t.barcode)
    # Still waiting: the tube is known now, but not received.
    assert await fetchval(lab, "SELECT waiting_kind FROM parked WHERE ce_id = $1",
                          ce_id) == "received"
    await receive(lab, dev_keys, t.barcode)
    reported = await one(lab, "results.reported.v1", barcode=t.barcode)
    assert [x["code"] for x in reported["observations"]] == ["K"]
    assert not seen(lab, "intake.rejected.v1")


async def test_results_for_a_rejected_tube_are_refused_with_the_reason(lab, dev_keys):
    o, t = await ordered_tube(lab, dev_keys, ("K",))
    early = await lis(lab, dev_keys).publish(analyser_results(t.barcode, obs("K", "4.1")))
    await until(lambda: fetchval(lab, "SELECT count(*) FROM parked WHERE ce_id = $1", early),
                what="early result parked")
    answer = await receive(lab, dev_keys, t.barcode, {**GOOD, "not_clotted": False})
    assert answer["state"] == "rejected"
    # The result that waited for this receipt is answered now, not a day later.
    [refused] = await lab.events.wait_for(rejection_for(early))
    assert payload(refused)["reason"] == "specimen_rejected"
    late = await lis(lab, dev_keys).publish(analyser_results(t.barcode, obs("K", "4.1")))
    [refused] = await lab.events.wait_for(rejection_for(late))
    assert payload(refused)["reason"] == "specimen_rejected"
    assert payload(refused)["fields"] == [{"field": "barcode", "code": "rejected"}]
    assert await fetchval(lab, "SELECT count(*) FROM results") == 0
    assert not seen(lab, "charges.posted.v1", order_id=o.order_id)


async def test_results_waiting_for_a_tube_that_is_cancelled_are_answered_at_once(
        lab, dev_keys):
    from datetime import UTC, datetime

    from yigongti_contracts.lab.codes import CancellationReason
    from yigongti_contracts.lab.v1 import LabOrderCancelled

    o, t = await ordered_tube(lab, dev_keys, ("K",))
    early = await lis(lab, dev_keys).publish(analyser_results(t.barcode, obs("K", "4.1")))
    await until(lambda: fetchval(lab, "SELECT count(*) FROM parked WHERE ce_id = $1", early),
                what="early result parked")
    await lab.terminal.publish(LabOrderCancelled(
        order_id=o.order_id, reason=CancellationReason.ordered_in_error, cancelled_by="doc-17",
        cancelled_at=datetime.now(UTC)))
    [refused] = await lab.events.wait_for(rejection_for(early))
    assert payload(refused)["reason"] == "specimen_cancelled"
    assert await fetchval(lab, "SELECT count(*) FROM parked") == 0


async def test_results_from_a_clinic_terminal_are_refused(lab, dev_keys):
    o, t = await ordered_tube(lab, dev_keys, ("K",))
    await receive(lab, dev_keys, t.barcode)
    ce_id = await lab.terminal.publish(analyser_results(t.barcode, obs("K", "4.1")))
    [refused] = await lab.events.wait_for(rejection_for(ce_id))
    assert payload(refused)["reason"] == "forbidden_institution"
    assert await fetchval(lab, "SELECT count(*) FROM results") == 0


async def test_a_parked_result_past_its_grace_period_is_refused_and_kept(lab, dev_keys):
    from datetime import timedelta

    from yigongti_kit.timers import shift_clock

    o, t = await ordered_tube(lab, dev_keys, ("K",))
    ce_id = await lis(lab, dev_keys).publish(analyser_results(t.barcode, obs("K", "4.1")))
    await until(lambda: fetchval(lab, "SELECT count(*) FROM parked WHERE ce_id = $1", ce_id),
                what="result parked")
    async with lab.pool.acquire() as conn:
        await shift_clock(conn, timedelta(hours=25))
    [refused] = await lab.events.wait_for(rejection_for(ce_id))
    assert payload(refused)["reason"] == "prerequisite_missing"
    kept = await fetchval(lab, "SELECT payload FROM parked WHERE ce_id = $1 AND expired_at"
                               " IS NOT NULL", ce_id)
    assert kept["event"]["observations"][0]["value"] == "4.1"


async def test_two_physicians_verifying_at_once_one_wins_the_other_gets_409(lab, dev_keys):
    o, t = await ordered_tube(lab, dev_keys, ("K", "NA"))
    await receive(lab, dev_keys, t.barcode)
    await report_results(lab, dev_keys, t.barcode, obs("K", "4.0"), obs("NA", "140"))
    await confirm(lab, dev_keys, t.barcode)

    async with lab.pool.acquire() as blocker, physician(lab, dev_keys, user="phys-1") as first, \
            physician(lab, dev_keys, user="phys-2") as second:
        # Hold the results so the first verification stops inside its
        # transaction, holding the order: the race is real, not a matter of luck.
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT 1 FROM results WHERE order_id = $1 FOR UPDATE", o.order_id)
        racing = asyncio.create_task(first.post(f"/orders/{o.order_id}/verify"))

        async def first_is_waiting() -> bool:
            assert not racing.done(), racing.result().text
            # Asked on another connection: inside the blocker's transaction
            # pg_stat_activity would show the snapshot of its first read.
            return await fetchval(
                lab, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                     " AND application_name = current_setting('application_name')")

        await until(first_is_waiting, what="first verification waiting")
        loser = await asyncio.wait_for(second.post(f"/orders/{o.order_id}/verify"), 10)
        await tx.rollback()
        winner = await asyncio.wait_for(racing, 10)
    assert winner.status_code == 200, winner.text
    assert loser.status_code == 409 and "another physician" in loser.json()["detail"]

    # Without the lock, two at once: still exactly one report.
    o2, t2 = await ordered_tube(lab, dev_keys, ("K",))
    await receive(lab, dev_keys, t2.barcode)
    await report_results(lab, dev_keys, t2.barcode, obs("K", "4.0"))
    await confirm(lab, dev_keys, t2.barcode)
    async with physician(lab, dev_keys, user="phys-1") as a, \
            physician(lab, dev_keys, user="phys-2") as b:
        answers = await asyncio.gather(a.post(f"/orders/{o2.order_id}/verify"),
                                       b.post(f"/orders/{o2.order_id}/verify"))
    assert sorted(x.status_code for x in answers) == [200, 409]
    for order_id in (o.order_id, o2.order_id):
        await one(lab, "report.verified.v1", order_id=order_id)
        assert await fetchval(lab, "SELECT count(*) FROM reports WHERE order_id = $1",
                              order_id) == 1
    await asyncio.sleep(0.5)
    assert len(seen(lab, "report.verified.v1", order_id=o.order_id)) == 1
    assert len(seen(lab, "report.verified.v1", order_id=o2.order_id)) == 1


async def test_another_clinic_sees_nothing_and_another_centre_does_nothing(lab, dev_keys):
    o, t = await verified_order(lab, dev_keys, ("K",))
    o2, t2 = await ordered_tube(lab, dev_keys, ("K",))

    await feed_settled(lab)
    async with clinician(lab, dev_keys, OTHER_CLINIC) as other:
        for path, status in ((f"/orders/{o.order_id}", 404),
                             (f"/orders/{o.order_id}/report", 404),
                             (f"/patients/{o.patient_ref}/recognised-results", 404)):
            answer = await other.get(path)
            assert answer.status_code == status, path
        feed = (await other.get("/feed")).json()
        assert feed["items"] == []
    async with clinician(lab, dev_keys) as own:
        assert (await own.get(f"/orders/{o.order_id}/report")).status_code == 200
        mine = (await own.get("/feed", params={"limit": 500})).json()["items"]
        assert {i["order_id"] for i in mine} >= {o.order_id, o2.order_id}

    # Staff of another county's lab centre can neither receive nor confirm nor verify.
    async with technologist(lab, dev_keys, OTHER_CENTRE) as stranger:
        assert (await stranger.post(f"/specimens/{t2.barcode}/receipt",
                                    json={"inspection": GOOD})).status_code == 404
    await receive(lab, dev_keys, t2.barcode)
    await report_results(lab, dev_keys, t2.barcode, obs("K", "4.0"))
    async with technologist(lab, dev_keys, OTHER_CENTRE) as stranger:
        assert (await stranger.post(f"/specimens/{t2.barcode}/confirm")).status_code == 404
        assert (await stranger.get(f"/orders/{o2.order_id}")).status_code == 404
    await confirm(lab, dev_keys, t2.barcode)
    async with physician(lab, dev_keys, OTHER_CENTRE) as stranger:
        assert (await stranger.post(f"/orders/{o2.order_id}/verify")).status_code == 404
    # A clinician cannot confirm or verify, even of the ordering clinic.
    async with clinician(lab, dev_keys) as clinic:
        assert (await clinic.post(f"/specimens/{t2.barcode}/confirm")).status_code == 403
        assert (await clinic.post(f"/orders/{o2.order_id}/verify")).status_code == 403
    async with http(lab, dev_keys, roles=("lab_technologist",)) as technologist_only:
        assert (await technologist_only.post(
            f"/orders/{o2.order_id}/verify")).status_code == 403
    await verify(lab, dev_keys, o2.order_id)


async def test_a_run_with_a_line_not_ordered_keeps_the_good_lines_and_refuses_that_one(
        lab, dev_keys):
    """An analyser run for K and NA that also carries CL (not ordered on the
    tube): K and NA are stored and reported, CL is refused by name; nothing of
    the good lines is lost."""
    o, t = await ordered_tube(lab, dev_keys, ("K", "NA"))
    await receive(lab, dev_keys, t.barcode)
    run = analyser_results(t.barcode, obs("K", "4.1"), obs("CL", "101"), obs("NA", "139"))
    ce_id = await lis(lab, dev_keys).publish(run)
    reported = await one(lab, "results.reported.v1", barcode=t.barcode)
    assert sorted(x["code"] for x in reported["observations"]) == ["K", "NA"]
    [refused] = await lab.events.wait_for(rejection_for(ce_id))
    assert payload(refused)["reason"] == "not_ordered"
    assert payload(refused)["fields"] == [{"field": "observations.1.code", "code": "not_ordered"}]
    assert await fetchval(lab, "SELECT count(*) FROM results WHERE barcode = $1",
                          t.barcode) == 2
    # A run with nothing usable is refused whole.
    ce_id = await lis(lab, dev_keys).publish(analyser_results(t.barcode, obs("CL", "101")))
    [whole] = await lab.events.wait_for(rejection_for(ce_id))
    assert payload(whole)["reason"] == "not_ordered"


async def test_every_partial_verification_is_in_the_report_history(lab, dev_keys):
    """A report released in parts (issue 8 item 11): each verification is a
    row of the report's history, with its physician and time, also after an
    amendment; a part verified after an amendment belongs to that revision."""
    o, t = await ordered_tube(lab, dev_keys, ("K", "NA", "CTNI"))
    await receive(lab, dev_keys, t.barcode)

    async def release(code: str, value: str, user: str) -> dict:
        await report_results(lab, dev_keys, t.barcode, obs(code, value))
        await confirm(lab, dev_keys, t.barcode)
        async with physician(lab, dev_keys, user=user) as doctor:
            answer = await doctor.post(f"/orders/{o.order_id}/verify")
        assert answer.status_code == 200, answer.text
        return answer.json()

    assert (await release("K", "4.0", "phys-1"))["revision"] == 1
    assert (await release("NA", "140", "phys-2"))["revision"] == 1
    async with physician(lab, dev_keys, user="phys-3") as doctor:
        amended = await doctor.post(f"/orders/{o.order_id}/amend", json={
            "observation_id": f"{t.barcode}.K.1", "value": "4.1",
            "reason": "transcription_error"})
    assert amended.status_code == 200, amended.text
    assert (await release("CTNI", "5", "phys-1"))["revision"] == 2

    async with physician(lab, dev_keys) as doctor:
        report = (await doctor.get(f"/orders/{o.order_id}/report")).json()
    assert [(r["revision"], r["by_staff"], r["reason"]) for r in report["revisions"]] == [
        (1, "phys-1", None), (1, "phys-2", None), (2, "phys-3", "transcription_error"),
        (2, "phys-1", None)]
    times = [r["at"] for r in report["revisions"]]
    assert times == sorted(times) and len(set(times)) == 4
    verified_by = {r["code"]: (r["verified_by"], r["report_revision"])
                   for r in report["observations"] if r["status"] == "verified"}
    assert verified_by == {"K": ("phys-3", 2), "NA": ("phys-2", 1), "CTNI": ("phys-1", 2)}

"""Reports and what signing sets off: the report reaches the clinic's feed; a
critical finding is raised, acknowledged only with read-back, and escalates
step by step on durable timers until then; an amendment keeps the original;
the reading fee is posted once; the study is recognised; a cancellation
withdraws an unsigned request and is refused after signing; a study unread at
its due time is overdue; an expired lease returns the study after a restart.
(This module moves the database clock: its own schema.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from diagflow import CLINIC, OTHER_CLINIC, PATIENT, until
from labflow import ce_type, payload, rejection_for
from yigongti_contracts.diagnosis.codes import AckChannel, CancellationReason
from yigongti_contracts.diagnosis.v1 import CriticalFindingAck, DiagnosisCancelled

STEMI = {"findings": "ST elevation V1-V4 with reciprocal changes.",
         "impression": "Acute anterior STEMI.", "conclusions": ["I21.0"], "critical": True}
NORMAL = {"findings": "Sinus rhythm 61/min.", "impression": "Normal ECG.",
          "conclusions": ["ECG.NORMAL"], "critical": False}


async def _claimed(dx, reader_id: str = "STAFF-2001", **kw) -> str:
    q = await dx.queued(**kw)
    async with dx.reader(reader_id) as reader:
        answer = await reader.post(f"/requests/{q['request_id']}/claim")
        assert answer.status_code == 200, answer.text
    return q["request_id"]


async def _sign(dx, rid: str, body: dict, reader_id: str = "STAFF-2001") -> dict:
    async with dx.reader(reader_id) as reader:
        answer = await reader.post(f"/requests/{rid}/report", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _ack(rid: str, finding_id: str, read_back: bool) -> CriticalFindingAck:
    return CriticalFindingAck(request_id=rid, finding_id=finding_id,
                              acknowledged_by="STAFF-0107", channel=AckChannel.terminal,
                              read_back_confirmed=read_back, acknowledged_at=datetime.now(UTC))


async def test_signed_report_reaches_the_clinic_feed_with_fee_once_and_recognition(dx):
    rid = await _claimed(dx)
    signed = await _sign(dx, rid, NORMAL)
    (reported,) = await dx.wait("diagnosis.reported.v1", rid)
    assert reported["conclusions"] == ["ECG.NORMAL"] and reported["critical"] is False
    assert "findings" not in reported and "impression" not in reported
    (charge,) = await dx.wait("diagnosis.charges.posted.v1", rid)
    assert (charge["item_code"], charge["amount"], charge["billing_institution"]) == (
        "310701001", "25.00", CLINIC)
    (recognised,) = await dx.wait("diagnosis.study.recognised.v1", rid)
    assert recognised["patient_ref"] == PATIENT and recognised["recording_ref"]
    # Signed is final: signing again is a conflict, and no second fee is posted.
    async with dx.reader() as reader:
        assert (await reader.post(f"/requests/{rid}/report", json=NORMAL)).status_code == 409
        bad = dict(NORMAL, conclusions=["Z99.9"])
        other = await _claimed(dx)
        assert (await reader.post(f"/requests/{other}/report", json=bad)).status_code == 422
    assert await dx.fetchval("SELECT count(*) FROM charges WHERE request_id = $1", rid) == 1
    await dx.settled()
    async with dx.client(CLINIC, ["clinician"]) as clinic:
        items = (await clinic.get("/feed", params={"limit": 500})).json()["items"]
        mine = [i["type"].removeprefix("yigongti.diagnosis.") for i in items
                if i["request_id"] == rid]
        assert mine == ["queued.v1", "reported.v1", "charges.posted.v1",
                        "study.recognised.v1"]
        view = (await clinic.get(f"/requests/{rid}")).json()
        assert view["revisions"][0]["findings"] == NORMAL["findings"]
        studies = (await clinic.get(f"/patients/{PATIENT}/recognised-studies")).json()
        assert rid in [s["request_id"] for s in studies["studies"]]
    async with dx.client(OTHER_CLINIC, ["clinician"]) as other_clinic:
        items = (await other_clinic.get("/feed")).json()["items"]
        assert rid not in [i["request_id"] for i in items]
        assert (await other_clinic.get(f"/requests/{rid}")).status_code == 404
    assert signed["revision"] == 1


async def test_an_amendment_keeps_the_original(dx):
    rid = await _claimed(dx)
    await _sign(dx, rid, NORMAL)
    amended = dict(STEMI, critical=False, conclusions=["ECG.OTHER"], reason="error_corrected")
    async with dx.reader() as reader:
        answer = await reader.post(f"/requests/{rid}/amend", json=amended)
    assert answer.status_code == 200 and answer.json()["revision"] == 2
    (event,) = await dx.wait("diagnosis.report.amended.v1", rid)
    assert (event["revision"], event["conclusions"]) == (2, ["ECG.OTHER"])
    rows = await dx.fetch("SELECT revision, findings, conclusions FROM reports "
                          "WHERE request_id = $1 ORDER BY revision", rid)
    assert [(r["revision"], list(r["conclusions"])) for r in rows] == [
        (1, ["ECG.NORMAL"]), (2, ["ECG.OTHER"])]
    assert rows[0]["findings"] == NORMAL["findings"]
    await dx.settled()
    async with dx.client(CLINIC, ["clinician"]) as clinic:
        items = (await clinic.get("/feed", params={"limit": 500})).json()["items"]
        assert "yigongti.diagnosis.report.amended.v1" in [
            i["type"] for i in items if i["request_id"] == rid]


async def test_critical_finding_escalates_step_by_step_until_read_back(dx):
    rid = await _claimed(dx)
    signed = await _sign(dx, rid, STEMI)
    (raised,) = await dx.wait("diagnosis.critical_finding.raised.v1", rid)
    assert raised["finding_id"] == signed["finding_id"]
    assert (raised["conclusion"], raised["modality"], raised["requesting_institution"]) == (
        "I21.0", "ECG", CLINIC)
    assert datetime.fromisoformat(raised["acknowledge_by"]) - datetime.fromisoformat(
        raised["raised_at"]) == timedelta(minutes=10)
    # Taken without read-back: recorded, the clock keeps running.
    await dx.terminal.publish(_ack(rid, raised["finding_id"], read_back=False))
    await until(lambda: dx.fetchval("SELECT count(*) FROM critical_calls WHERE finding_id = $1",
                                    raised["finding_id"]))
    await dx.shift_clock(timedelta(minutes=10))
    (first,) = await dx.wait("critical_finding.escalated.v1", rid)
    assert (first["step"], first["escalated_to"]) == (1, "requesting_clinic")
    for step, who in ((2, "clinic_on_call_backup"), (3, "centre_supervisor"),
                      (4, "centre_supervisor")):
        await dx.shift_clock(timedelta(minutes=5))
        steps = await dx.wait("critical_finding.escalated.v1", rid, count=step)
        assert (steps[-1]["step"], steps[-1]["escalated_to"]) == (step, who)
    await dx.terminal.publish(_ack(rid, raised["finding_id"], read_back=True))
    (acked,) = await dx.wait("critical_finding.acknowledged.v1", rid)
    assert acked["acknowledged_by"] == "STAFF-0107"
    await dx.shift_clock(timedelta(minutes=10))
    await dx.settled()
    assert len(dx.events.of_type("critical_finding.escalated.v1")) == 4
    calls = await dx.fetch("SELECT kind, read_back FROM critical_calls WHERE finding_id = $1 "
                           "ORDER BY id", raised["finding_id"])
    assert [(c["kind"], c["read_back"]) for c in calls] == [
        ("terminal_ack", False)] + [("escalation", False)] * 4 + [("terminal_ack", True)]
    # An acknowledgement from another institution's terminal would be refused;
    # one for an unknown finding is.
    ce_id = await dx.terminal.publish(_ack(rid, "CF-none", read_back=True))
    (refused,) = await dx.events.wait_for(rejection_for(ce_id))
    assert payload(refused)["reason"] == "unknown_finding"


async def test_cancellation_withdraws_before_signing_and_is_refused_after(dx):
    rid = await _claimed(dx)
    cancel = DiagnosisCancelled(request_id=rid, reason=CancellationReason.patient_left,
                                cancelled_by="STAFF-0107", cancelled_at=datetime.now(UTC))
    await dx.terminal.publish(cancel)
    (withdrawn,) = await dx.wait("diagnosis.withdrawn.v1", rid)
    assert withdrawn["reason"] == "patient_left"
    async with dx.reader() as reader:
        assert (await reader.post(f"/requests/{rid}/report", json=NORMAL)).status_code == 409
    signed = await _claimed(dx)
    await _sign(dx, signed, NORMAL)
    ce_id = await dx.terminal.publish(cancel.model_copy(update={"request_id": signed}))
    (refused,) = await dx.events.wait_for(rejection_for(ce_id))
    assert payload(refused)["reason"] == "already_reported"


async def test_unread_at_due_time_is_overdue_to_the_supervisor(dx):
    q = await dx.queued(priority_hint="stat")
    await dx.shift_clock(timedelta(minutes=10, seconds=1))
    (overdue,) = await dx.wait("diagnosis.overdue.v1", q["request_id"])
    assert (overdue["priority"], overdue["supervisor"]) == ("stat", "centre_supervisor")


async def test_an_expired_lease_returns_the_study_after_a_restart(dx):
    rid = await _claimed(dx, reader_id="STAFF-LEASE")
    await dx.restart()
    await dx.shift_clock(timedelta(minutes=15, seconds=1))
    (released,) = await dx.wait("diagnosis.released.v1", rid)
    assert (released["reason"], released["reader"]) == ("lease_expired", "STAFF-LEASE")
    assert await dx.fetchval("SELECT status FROM requests WHERE request_id = $1",
                             rid) == "queued"
    assert ce_type  # (imported for symmetry with the other modules)


async def test_a_phone_call_back_with_read_back_acknowledges_and_turnaround_is_queryable(dx):
    first_contact = datetime.now(UTC) - timedelta(minutes=4)
    rid = await _claimed(dx, first_medical_contact_at=first_contact)
    await _sign(dx, rid, STEMI)
    await dx.wait("diagnosis.critical_finding.raised.v1", rid)
    async with dx.reader() as reader:
        url = f"/requests/{rid}/critical-finding/call-backs"
        missed = await reader.post(url, json={"read_back_confirmed": False})
        assert missed.status_code == 200 and missed.json()["acknowledged"] is False
        taken = await reader.post(url, json={"reached": "STAFF-0107",
                                             "read_back_confirmed": True})
        assert taken.json()["acknowledged"] is True
        assert (await reader.post(url, json={"read_back_confirmed": False})).status_code == 409
        figures = (await reader.get("/turnaround")).json()
    (acked,) = await dx.wait("critical_finding.acknowledged.v1", rid)
    assert (acked["channel"], acked["acknowledged_by"]) == ("phone", "STAFF-0107")
    calls = await dx.fetch("SELECT kind, called_by, read_back FROM critical_calls c JOIN "
                           "critical_findings f USING (finding_id) WHERE f.request_id = $1 "
                           "ORDER BY c.id", rid)
    assert [(c["kind"], c["called_by"], c["read_back"]) for c in calls] == [
        ("call_back", "STAFF-2001", False), ("call_back", "STAFF-2001", True)]
    stages = figures["stages"]
    assert stages["claimed_to_reported"]["count"] >= 1
    assert stages["reported_to_acknowledged"]["count"] >= 1
    assert stages["first_contact_to_ecg"]["count"] >= 1
    assert stages["first_contact_to_ecg"]["target_s"] == 600


async def test_turnaround_is_exported_as_a_metric(dx):
    import httpx

    rid = await _claimed(dx)
    await _sign(dx, rid, NORMAL)
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{dx.runtime.metrics_port}/metrics")).text
    for stage in ("requested_to_queued", "queued_to_claimed", "claimed_to_reported",
                  "ecg_to_diagnosis"):
        assert f'stage="{stage}"' in text, stage
    assert "diagnosis_turnaround_seconds" in text

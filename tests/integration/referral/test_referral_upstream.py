"""What referral reads from the diagnosis and lab services' events: a STEMI
finding at a township without a chest-pain centre becomes a suggestion in the
clinic's waiting long-poll; recognised results and studies are indexed per
patient before any referral and served, scoped, to the receiver; a lab
critical value on a patient in transit is forwarded to the receiver's feed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal

from labflow import payload
from referralflow import COUNTY, DAFENG, TOWNSHIP, accept, new_patient, now, of, up
from yigongti_contracts.common import Age, AgeUnit, Sex
from yigongti_contracts.diagnosis import v1 as diagnosis
from yigongti_contracts.diagnosis.codes import Modality
from yigongti_contracts.lab import v1 as lab
from yigongti_contracts.lab.codes import CriticalDirection, Flag
from yigongti_contracts.lab.parts import Observation, Recognition
from yigongti_contracts.referral import v1

LAB_CENTRE = "652301-L01"
ECG_CENTRE = "652301-E01"


def finding(patient: str, conclusion: str = "I21.0",
            institution: str = TOWNSHIP) -> diagnosis.CriticalFindingRaised:
    request_id = f"DXR-{uuid.uuid4().hex[:12]}"
    return diagnosis.CriticalFindingRaised(
        finding_id=f"CF-{uuid.uuid4().hex[:8]}", request_id=request_id,
        report_id=f"RPT-{uuid.uuid4().hex[:8]}", patient_ref=patient, sex=Sex.male,
        age=Age(value=80, unit=AgeUnit.years), requesting_institution=institution,
        reading_centre=ECG_CENTRE, modality=Modality.ECG, conclusion=conclusion,
        raised_at=now(), acknowledge_by=now() + timedelta(minutes=10))


async def test_a_stemi_finding_suggests_a_referral_in_the_clinics_waiting_feed(referral) -> None:
    patient = new_patient()
    async with referral.http(TOWNSHIP, roles=("clinician",)) as clinic:
        start = (await clinic.get("/feed", params={"limit": 500})).json()["next"]
        # Nothing for a normal ECG, nor for a STEMI where the county can treat it.
        await referral.diagnosis.publish(finding(patient, "I10"))
        await referral.diagnosis.publish(finding(patient, institution=COUNTY))
        waiting = asyncio.create_task(clinic.get("/feed", params={"after": start, "wait": 15}))
        await asyncio.sleep(0.2)
        stemi = finding(patient)
        await referral.diagnosis.publish(stemi)
        items = (await waiting).json()["items"]
        # The same finding again, under another ce_id: suggested once.
        again = await referral.diagnosis.publish(stemi)
        async with referral.pool.acquire() as conn:
            for _ in range(200):
                if await conn.fetchval("SELECT count(*) FROM processed_events WHERE ce_id = $1",
                                       again):
                    break
                await asyncio.sleep(0.05)
            for _ in range(200):  # and whatever it wrote is published (the feed follows)
                if not await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL"):
                    break
                await asyncio.sleep(0.05)
        later = (await clinic.get("/feed", params={"after": start, "limit": 500})).json()
        assert sum(i["type"].endswith("referral.suggested.v1") and
                   i["data"]["patient_ref"] == patient for i in later["items"]) == 1
    suggested = [i for i in items if i["type"].endswith("referral.suggested.v1")]
    assert len(suggested) == 1
    data = suggested[0]["data"]
    assert data["to_institution"] == COUNTY and data["finding"] == "stemi"
    assert data["capability"] == "chest_pain_centre" and data["patient_ref"] == patient
    async with referral.http(TOWNSHIP) as clinic:
        metrics = (await clinic.get("/referral-metrics")).json()
    assert metrics["median_finding_to_suggestion_ms"] is not None


async def test_recognised_results_indexed_before_the_referral_are_attached(referral) -> None:
    patient = new_patient()
    order_id = f"ORD-{uuid.uuid4().hex[:10]}"
    verified = now()
    await referral.lab.publish(lab.LabReportVerified(
        order_id=order_id, report_id=f"RPT-{order_id}", patient_ref=patient,
        ordering_institution=TOWNSHIP, lab_centre=LAB_CENTRE, verified_by="phys-2",
        verified_at=verified,
        observations=(Observation(code="10839-9", value=Decimal("2.10"), unit="ng/mL",
                                  observation_id=f"OBS-{order_id}", flag=Flag.H,
                                  critical=True),),
        recognitions=(Recognition(observation_id=f"OBS-{order_id}", code="10839-9",
                                  valid_until=verified + timedelta(days=7)),)))
    await referral.diagnosis.publish(diagnosis.StudyRecognised(
        recognition_id=f"REC-{order_id}", request_id=f"DXR-{order_id}", modality=Modality.ECG,
        patient_ref=patient, performed_by=TOWNSHIP, recording_ref="REC-7f3a9c",
        reported_at=verified, valid_until=verified + timedelta(days=30)))
    async with referral.pool.acquire() as conn:
        for _ in range(200):
            if await conn.fetchval("SELECT count(*) FROM recognised WHERE patient_ref = $1",
                                   patient) == 2:
                break
            await asyncio.sleep(0.05)
    request = up(patient=patient, attached_results=(f"lab:OBS-{order_id}",))
    await referral.send(TOWNSHIP, request)
    await referral.wait(of(request.referral_id, "referral.opened.v1"))
    async with referral.http(COUNTY) as receiver:
        got = (await receiver.get(f"/referrals/{request.referral_id}/attachments")).json()
    refs = {r["ref"]: r for r in got["results"]}
    assert set(refs) == {f"lab:OBS-{order_id}", f"study:REC-{order_id}"}
    assert refs[f"lab:OBS-{order_id}"]["observation"]["value"] == "2.10"
    assert refs[f"lab:OBS-{order_id}"]["named_by_request"] is True
    async with referral.http(DAFENG) as stranger:
        answer = await stranger.get(f"/referrals/{request.referral_id}/attachments")
        assert answer.status_code == 404


async def test_a_lab_critical_value_on_a_patient_in_transit_reaches_the_receiver(referral) -> None:
    patient = new_patient()
    request = up(patient=patient)
    rid = request.referral_id
    await referral.send(TOWNSHIP, request)
    await referral.send(COUNTY, accept(rid))
    await referral.send(TOWNSHIP, v1.PatientDeparted(referral_id=rid, departed_at=now()))
    await referral.wait(of(rid, "patient.in_transit.v1"))
    await referral.lab.publish(lab.CriticalValueRaised(
        order_id=f"ORD-{uuid.uuid4().hex[:10]}", critical_id=f"CRIT-{uuid.uuid4().hex[:8]}",
        patient_ref=patient, ordering_institution=TOWNSHIP, lab_centre=LAB_CENTRE,
        barcode="T250115000123", observation_id="OBS-9", test_code="2823-3",
        value=Decimal("6.9"), unit="mmol/L", direction=CriticalDirection.high,
        confirmed_by="tech-8", raised_at=now(), escalate_at=now() + timedelta(minutes=10)))
    forwarded = payload((await referral.wait(of(rid, "critical_value.forwarded.v1")))[0])
    assert forwarded["to_institution"] == COUNTY and forwarded["test_code"] == "2823-3"
    async with referral.http(COUNTY) as receiver:
        feed = (await receiver.get("/feed", params={"limit": 500})).json()["items"]
    assert any(i["type"].endswith("critical_value.forwarded.v1") and i["referral_id"] == rid
               for i in feed)
    async with referral.http(TOWNSHIP) as sender:  # the sender has the lab's own feed
        feed = (await sender.get("/feed", params={"limit": 500})).json()["items"]
    assert not any(i["type"].endswith("critical_value.forwarded.v1") for i in feed)

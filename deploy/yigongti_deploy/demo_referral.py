"""The demo's referrals (DESIGN §3 steps 4 and 7): the STEMI finding makes
the referral service suggest the county chest-pain centre; the township
requests it, the county accepts, the patient departs and arrives (door-in);
after treatment the county closes the upward referral with its outcome and
refers him down to the township with a care plan, and the township takes him
over and records the follow-up rounds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from yigongti_contracts.refdata import Capability
from yigongti_contracts.referral import v1
from yigongti_contracts.referral.codes import Direction, DownwardReason, UpwardReason, Urgency

from .demo_journey import (
    CARDIOLOGIST,
    COORDINATOR,
    COUNTY,
    TOWNSHIP,
    TOWNSHIP_DOCTOR,
    Journey,
    StepFailed,
    ok,
    place,
)

CLINICIAN = ["clinician"]
COORDINATING = ["referral_coordinator"]


async def refer_up(j: Journey) -> None:
    """Step 4: suggested from the finding, requested, accepted, departed, arrived."""
    patient = j.facts["patient_ref"]
    suggested = await j.events.one("referral.suggested.v1", patient_ref=patient)
    if suggested["to_institution"] != COUNTY:
        raise StepFailed(f"suggested {suggested['to_institution']}, not {COUNTY}")
    j.facts["suggested_at"] = datetime.fromisoformat(suggested["suggested_at"])
    j.did("referral service", TOWNSHIP, f"suggested an {suggested['urgency']} referral to the "
          f"{suggested['capability'].replace('_', '-')} of {place(COUNTY)} (from the "
          f"{suggested['finding'].upper()} finding)", "referral.suggested.v1")

    rid = f"REF-{uuid.uuid4().hex[:12]}"
    j.facts["referral_up"] = rid
    await j.terminal("referral").publish(v1.ReferralRequested(
        referral_id=rid, direction=Direction.up, from_institution=TOWNSHIP,
        to_institution=COUNTY, patient_ref=patient,
        reason=UpwardReason.critical_beyond_capability, urgency=Urgency.emergency,
        requested_by=TOWNSHIP_DOCTOR, requested_at=datetime.now(UTC),
        required_capability=Capability.chest_pain_centre))
    opened = await j.events.one("referral.opened.v1", referral_id=rid)
    j.did(f"doctor {TOWNSHIP_DOCTOR}", TOWNSHIP, f"requested the referral (emergency), to be "
          f"accepted by {opened['accept_by'][11:19]} UTC", "referral.opened.v1")

    async with j.http("referral", COORDINATOR, COUNTY, COORDINATING) as county, \
            j.http("referral", TOWNSHIP_DOCTOR, TOWNSHIP, CLINICIAN) as township:
        ok(await county.post(f"/referrals/{rid}/accept"), "accept")
        await j.events.one("referral.accepted.v1", referral_id=rid)
        j.did(f"coordinator {COORDINATOR}", COUNTY, "accepted the referral",
              "referral.accepted.v1")
        ok(await township.post(f"/referrals/{rid}/departure", json={}), "departure")
        transit = await j.events.one("patient.in_transit.v1", referral_id=rid)
        overdue = (transit.get("overdue_at") or "")[11:19]
        j.did(f"doctor {TOWNSHIP_DOCTOR}", TOWNSHIP, "recorded that the ambulance left with "
              "him" + (f" (the county is alerted if he is not in by {overdue} UTC)"
                       if overdue else ""), "patient.in_transit.v1")
        ok(await county.post(f"/referrals/{rid}/arrival", json={}), "arrival")
    received = await j.events.one("patient.received.v1", referral_id=rid)
    j.facts["door_in_at"] = datetime.fromisoformat(received["arrived_at"])
    j.did(f"coordinator {COORDINATOR}", COUNTY, "recorded his arrival at the chest-pain "
          "centre (door-in)", "patient.received.v1")


async def refer_down(j: Journey) -> None:
    """Step 7: the upward referral closed with the outcome; the downward
    referral with its care plan; taken over; follow-up rounds recorded."""
    up = j.facts["referral_up"]
    async with j.http("referral", CARDIOLOGIST, COUNTY, COORDINATING) as county:
        ok(await county.post(f"/referrals/{up}/discharge", json={
            "outcome": "discharged",
            "summary": "Anterior STEMI treated; stable; continuing care at the township."}),
            "discharge")
    await j.events.one("referral.closed.v1", referral_id=up)
    j.did(f"cardiologist {CARDIOLOGIST}", COUNTY, "discharged him, closing the upward referral "
          "(the township is told the outcome)", "referral.closed.v1")

    rid = f"REF-{uuid.uuid4().hex[:12]}"
    j.facts["referral_down"] = rid
    await j.terminal("referral", county=True).publish(v1.ReferralRequested(
        referral_id=rid, direction=Direction.down, from_institution=COUNTY,
        to_institution=TOWNSHIP, patient_ref=j.facts["patient_ref"],
        reason=DownwardReason.stable_rehabilitation, urgency=Urgency.routine,
        requested_by=CARDIOLOGIST, requested_at=datetime.now(UTC),
        care_plan=v1.CarePlan(diagnoses=("I21.0",), warning_signs=("chest_pain",),
                              follow_up_days=(7, 30)),
        handed_over_by=CARDIOLOGIST))
    await j.events.one("referral.opened.v1", referral_id=rid)
    j.did(f"cardiologist {CARDIOLOGIST}", COUNTY, "referred him down to the township with a "
          "care plan (I21.0; warning sign: chest pain; rounds on day 7 and 30)",
          "referral.opened.v1")
    async with j.http("referral", TOWNSHIP_DOCTOR, TOWNSHIP, CLINICIAN) as township:
        ok(await township.post(f"/referrals/{rid}/accept"), "accept down")
        ok(await township.post(f"/referrals/{rid}/arrival", json={}), "arrival down")
        closed = await j.events.one("referral.closed.v1", referral_id=rid)
        if closed["outcome"] != "care_taken_over":
            raise StepFailed(f"the downward referral closed {closed['outcome']}")
        await j.events.wait("follow_up.scheduled.v1", count=2, referral_id=rid)
        j.did(f"doctor {TOWNSHIP_DOCTOR}", TOWNSHIP, "took his care over; two follow-up "
              "rounds scheduled", "follow_up.scheduled.v1")
        for n, day in enumerate((7, 30), 1):
            done = ok(await township.post(f"/referrals/{rid}/follow-ups/{day}",
                                          json={"finding": "stable"}), f"round {day}")
            if done["events"] != ["FollowUpDone"]:
                raise StepFailed(f"round {day}: {done['events']}")
            await j.events.wait("follow_up.done.v1", count=n, referral_id=rid)
            j.did(f"doctor {TOWNSHIP_DOCTOR}", TOWNSHIP, f"saw him on the day-{day} follow-up "
                  "round: stable", "follow_up.done.v1")

"""What referral reads from the diagnosis and lab services' events (kit
subscriptions.py), each in the event's own transaction:

- diagnosis CriticalFindingRaised → a ReferralSuggested to the nearest capable
  institution when the conclusion is on the list and the requesting
  institution lacks the capability (routing.suggest); the time from the
  finding to the suggestion is measured.
- diagnosis StudyRecognised, lab LabReportVerified → the recognised-results
  index per patient (table `recognised`), whether or not a case exists yet:
  a referral serves them, scoped, to its receiver (api.py).
- lab CriticalValueRaised on a patient in transit → CriticalValueForwarded
  to the receiving institution's feed, for information (only the ordering
  institution's acknowledgement stops the lab's clock).
"""

from __future__ import annotations

from datetime import UTC, datetime

from yigongti_contracts.diagnosis import v1 as diagnosis
from yigongti_contracts.lab import v1 as lab
from yigongti_contracts.referral import v1
from yigongti_kit import timers
from yigongti_kit.batches import Delivery
from yigongti_kit.subscriptions import Subscription

from . import metrics, publish
from .facts import CriticalFindingRaised
from .routing import suggest
from .transitions import rules


async def on_critical_finding(d: Delivery) -> None:
    e = d.event
    # The host clock, not a round trip for the database's: this path is timed
    # (finding → suggestion), and a suggestion sets no deadline.
    now = datetime.now(UTC)
    r = rules()
    suggestion = suggest(CriticalFindingRaised(
        request_id=e.request_id, patient_ref=e.patient_ref,
        requesting_institution=e.requesting_institution, modality=str(e.modality),
        conclusion_code=e.conclusion, raised_at=e.raised_at), r.refdata, r.policy, now)
    if suggestion is None:
        return
    await publish.emit(d.conn, [publish.contract_event(suggestion)])
    metrics.suggestion(suggestion.from_institution,
                       (now - suggestion.finding_raised_at).total_seconds() * 1000)


async def _index(d: Delivery, *, ref: str, patient_ref: str, kind: str, performed_by: str,
                 recognised_at, valid_until, detail: dict, supersedes: str | None = None) -> None:
    await d.conn.execute(
        """INSERT INTO recognised (ref, patient_ref, kind, performed_by, recognised_at,
                                   valid_until, detail)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (ref) DO UPDATE SET valid_until = excluded.valid_until,
                                           detail = excluded.detail""",
        ref, patient_ref, kind, performed_by, recognised_at, valid_until, detail)
    if supersedes is not None:
        await d.conn.execute("UPDATE recognised SET superseded_by = $1 WHERE ref = $2",
                             ref, supersedes)


async def on_study_recognised(d: Delivery) -> None:
    e = d.event
    await _index(d, ref=f"study:{e.recognition_id}", patient_ref=e.patient_ref, kind="study",
                 performed_by=e.performed_by, recognised_at=e.reported_at,
                 valid_until=e.valid_until,
                 detail={"request_id": e.request_id, "modality": str(e.modality),
                         "study_instance_uid": e.study_instance_uid,
                         "recording_ref": e.recording_ref},
                 supersedes=f"study:{e.supersedes}" if e.supersedes else None)


async def on_lab_report_verified(d: Delivery) -> None:
    """The recognised observations of a verified report, with their values as
    the report carried them (the receiver cannot read the lab's HTTP)."""
    e = d.event
    observations = {o.observation_id: o for o in e.observations}
    for rec in e.recognitions:
        o = observations.get(rec.observation_id)
        if o is None:
            continue
        value = o.model_dump(mode="json")
        await _index(d, ref=f"lab:{rec.observation_id}", patient_ref=e.patient_ref, kind="lab",
                     performed_by=e.lab_centre, recognised_at=e.verified_at,
                     valid_until=rec.valid_until,
                     detail={"order_id": e.order_id, "report_id": e.report_id,
                             "code": rec.code, "observation": value})


async def on_lab_critical_value(d: Delivery) -> None:
    e = d.event
    rows = await d.conn.fetch(
        """SELECT referral_id, from_institution, to_institution FROM cases
            WHERE patient_ref = $1 AND state = 'in_transit'""", e.patient_ref)
    if not rows:
        return
    now = await timers.db_now(d.conn)
    await publish.emit(d.conn, [v1.CriticalValueForwarded(
        referral_id=r["referral_id"], from_institution=r["from_institution"],
        to_institution=r["to_institution"], patient_ref=e.patient_ref, order_id=e.order_id,
        critical_id=e.critical_id, test_code=e.test_code, raised_at=e.raised_at,
        forwarded_at=now) for r in rows])


SUBSCRIPTIONS = (
    Subscription("diagnosis", {
        diagnosis.CriticalFindingRaised.CE_TYPE: on_critical_finding,
        diagnosis.StudyRecognised.CE_TYPE: on_study_recognised,
    }),
    Subscription("lab", {
        lab.LabReportVerified.CE_TYPE: on_lab_report_verified,
        lab.CriticalValueRaised.CE_TYPE: on_lab_critical_value,
    }),
)


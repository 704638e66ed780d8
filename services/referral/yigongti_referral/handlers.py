"""Intake: each record of `referral.intake.v1` becomes the state machine's
fact and goes through transitions.run under the case lock (locking.py). A
record the machine refuses is answered with IntakeRejected by the kit; one it
parks waits in the case (domain.py) and is answered if refused later."""

from __future__ import annotations

from dataclasses import fields

from yigongti_contracts.base import StrictModel
from yigongti_contracts.referral import v1
from yigongti_kit.consumer import Handler, Intake, Rejection

from . import facts, store, transitions

_FACT: dict[type[StrictModel], type] = {m: getattr(facts, m.__name__) for m in v1.INTAKE}


def to_fact(record: StrictModel) -> facts.IntakeFact:
    """The contract's record as the machine's fact (the same fields)."""
    kind = _FACT[type(record)]
    values = {f.name: getattr(record, f.name) for f in fields(kind)}
    if isinstance(record, v1.ReferralRequested) and record.care_plan is not None:
        plan = record.care_plan
        values["care_plan"] = facts.CarePlan(plan.diagnoses, plan.medications,
                                             plan.warning_signs, plan.follow_up_days)
    return kind(**values)


async def handle(intake: Intake) -> None:
    record = intake.event
    sender = intake.sender.institution_id if intake.sender else None
    await store.remember_origin(intake.conn, ce_id=intake.envelope.id,
                                ce_type=intake.envelope.type, ce_source=intake.envelope.source,
                                referral_id=record.referral_id, sender_institution=sender)
    try:
        await transitions.run(intake.conn, to_fact(record), fact_id=intake.envelope.id,
                              sender=sender)
    except transitions.Refused as exc:
        raise Rejection(exc.reason, exc.problems) from None


HANDLERS: dict[str, Handler] = {m.CE_TYPE: handle for m in v1.INTAKE}

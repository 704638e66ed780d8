"""One way to settle, two doors: `settle` is the one handler; the counter's
HTTP call (api.py) and the intake record (`HANDLERS`) both reach it with a
SettlementRequested and share the outBizNo idempotency (the settlement's id
is <institution>:<outBizNo>; a retry gets the stored answer).

A request that can never apply raises `Refused` (the counter gets a 4xx, the
intake sender an IntakeRejected). A request the rules refuse (a deceased
person's bill, a definite audit hit before settlement) is an outcome: stored,
answered again on a retry, published as SettlementRejected.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from importlib.resources import files
from typing import Any

import asyncpg
import yaml
from yigongti_contracts.common import FieldError, Sex
from yigongti_contracts.refdata import load as load_refdata
from yigongti_contracts.settlement.codes import SettlementMode, settlement_id_of
from yigongti_contracts.settlement.v1 import (
    HighOutOfPocketAlert,
    SettlementCompleted,
    SettlementRejected,
    SettlementRequested,
    SettlementReversalRequested,
    SettlementReversed,
    StepPart,
)
from yigongti_kit.consumer import Handler, Intake, Rejection
from yigongti_kit.outbox import outbox_cte

from . import locking, payers, poverty_watch, supervision
from .benefits import (
    AssistanceCategory,
    CareSetting,
    ItemCategory,
    NoPolicy,
    Scheme,
    policy_by_version,
    policy_for,
)
from .events import emit_all, events_arguments
from .explanation import explain
from .identity import supervision_flag

ZERO = Decimal("0.00")


class Refused(Exception):
    """The request can never apply: a reason code and (path, code) fields."""

    def __init__(self, code: str, fields: list[tuple[str, str]] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.fields = fields or []


def request_digest(req: SettlementRequested) -> str:
    data = req.model_dump(mode="json", exclude={"requested_at", "operator_id"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@cache
def _credit() -> dict[str, Any]:
    return yaml.safe_load((files("yigongti_settlement") / "policy" / "institution-credit.yaml")
                          .read_text("utf-8"))


def credit_of(institution: str) -> supervision.CreditLevel:
    raw = _credit()
    entry = (raw.get("institutions") or {}).get(institution, raw["default"])
    return supervision.CreditLevel(entry["value"])


def _acc(figures: dict[str, str] | None) -> payers.Accumulators:
    return payers.Accumulators(**{k: Decimal(v) for k, v in (figures or {}).items()})


async def settle(conn: asyncpg.Connection, req: SettlementRequested, *,
                 sender_institution: str | None) -> dict[str, Any]:
    """Settle (or answer again) the request; the counter's answer."""
    if sender_institution not in (None, req.institution):
        raise Refused("forbidden_institution", [("institution", "forbidden_institution")])
    settlement_id = settlement_id_of(req.institution, req.out_biz_no)
    await locking.lock_settlement(conn, settlement_id)
    done = await conn.fetchrow("SELECT request_digest, answer FROM settlements "
                               "WHERE settlement_id = $1", settlement_id)
    if done is not None:
        if done["request_digest"] != request_digest(req):
            raise Refused("out_biz_no_reused", [("out_biz_no", "reused")])
        return (done["answer"])
    identity = await conn.fetchrow("SELECT * FROM identities WHERE identity_id = $1",
                                   req.identity_id)
    return await settle_new(conn, req, identity)


# What a settlement decides on, read in one round trip once the person's lock
# is held: the person, this year's accumulators, the history the audit rules
# read (items of the last 120 days, stays, completed settlements of the last
# day), the visit's latest completed settlement and its stay deductible.
_FACTS = """
    SELECT p.sex, p.died_on, p.region, p.scheme, p.assistance, p.formerly_poor,
      (SELECT figures FROM accumulators WHERE person_id = $1 AND year = $2) AS figures,
      (SELECT json_agg(json_build_array(item_code, service_date, quantity))
         FROM settled_items WHERE person_id = $1 AND service_date > $3::date - 120) AS items,
      (SELECT json_agg(json_build_array(visit_id, institution, admitted_on, discharged_on))
         FROM stays WHERE person_id = $1) AS stays,
      (SELECT json_agg(json_build_array(settlement_id, institution, settled_at))
         FROM settlements WHERE person_id = $1 AND status = 'completed'
          AND settled_at > db_now() - interval '1 day') AS recent,
      (SELECT settlement_id FROM settlements WHERE visit_id = $4 AND status = 'completed'
        ORDER BY seq DESC LIMIT 1) AS earlier_settlement,
      (SELECT used FROM stay_deductibles WHERE visit_id = $4) AS stay_used
    FROM persons p WHERE p.person_id = $1"""

# A completed settlement's rows in one round trip: the accumulators, the items
# the history rules will read, the settlement itself and its events.
_RECORD = f"""
    WITH acc AS (
        INSERT INTO accumulators (person_id, year, figures) VALUES ($1, $2, $3)
        ON CONFLICT (person_id, year) DO UPDATE SET figures = excluded.figures),
    items AS (
        INSERT INTO settled_items (person_id, settlement_id, item_code, service_date, quantity)
        SELECT $1, $4, * FROM unnest($5::text[], $6::date[], $7::integer[])),
    {outbox_cte(20)}
    INSERT INTO settlements (settlement_id, out_biz_no, institution, visit_id, identity_id,
        person_id, patient_ref, request_digest, status, year, inputs, policy_version,
        breakdown, answer, supplementary_of, settled_at)
    VALUES ($4, $8, $9, $10, $11, $1, $12, $13, 'completed', $2, $14, $15, $16, $17, $18, $19)"""


async def settle_new(conn: asyncpg.Connection, req: SettlementRequested,
                     identity: asyncpg.Record | None) -> dict[str, Any]:
    """A settlement not answered before: its attempt's lock (1) is held, and
    `identity` is the check it names (None if there is none)."""
    settlement_id = settlement_id_of(req.institution, req.out_biz_no)
    if identity is None or identity["institution"] != req.institution \
            or identity["status"] != "verified":
        raise Refused("identity_unknown", [("identity_id", "not_found")])
    if identity["visit_id"] != req.visit_id:
        raise Refused("identity_not_for_visit", [("visit_id", "mismatch")])
    try:
        refdata = load_refdata()
        level = refdata.level_of(req.institution)
    except LookupError:
        raise Refused("unknown_institution", [("institution", "unknown")]) from None
    person_id = identity["person_id"]
    await locking.lock_visit_and_person(conn, req.visit_id, person_id)
    on = (req.stay.discharged_at if req.stay else req.requested_at).date()
    year = on.year
    facts = await conn.fetchrow(_FACTS, person_id, year, on, req.visit_id)
    ref = identity["patient_ref"]
    if req.mode is SettlementMode.discharge and facts["assistance"] == "none":
        # 先诊疗后付费 is for assistance recipients (DESIGN §5)
        raise Refused("not_eligible_for_treat_first", [("mode", "not_eligible")])

    charges = await conn.fetch(
        """SELECT * FROM visit_charges WHERE visit_id = $1 AND settled_in IS NULL
             AND reversed_at IS NULL AND patient_ref = $2 ORDER BY posted_at, charge_id""",
        req.visit_id, ref) if req.posted_charges else []
    lines = [payers.ChargeLine(line.item_code, ItemCategory(line.category.value),
                               Decimal(line.quantity), line.unit_price, line.amount,
                               line.price_limit) for line in req.lines]
    items = [supervision.ServiceItem(line.item_code, line.served_at.date(), line.quantity)
             for line in req.lines]
    for c in charges:
        lines.append(payers.ChargeLine(c["item_code"], ItemCategory(c["category"]),
                                       Decimal(c["quantity"]), c["unit_price"], c["amount"]))
        items.append(supervision.ServiceItem(c["item_code"], c["posted_at"].date(),
                                             c["quantity"]))
    if not lines:
        raise Refused("nothing_to_settle", [("lines", "empty")])
    now = datetime.now(UTC)
    try:
        policy = policy_for(facts["region"], on)
    except NoPolicy:
        raise Refused("no_policy", [("region", "no_policy")]) from None

    history = [supervision.ServiceItem(code, date.fromisoformat(day), quantity)
               for code, day, quantity in facts["items"] or ()]
    hits = supervision.bill_hits(items, sex=Sex(facts["sex"]), died_on=facts["died_on"],
                                 presented_on=now.date(), history=history)
    if req.stay is not None:
        earlier = [supervision.Stay(visit, institution, date.fromisoformat(admitted),
                                    date.fromisoformat(discharged))
                   for visit, institution, admitted, discharged in facts["stays"] or ()]
        hits += supervision.readmission(
            supervision.Stay(req.visit_id, req.institution, req.stay.admitted_at.date(),
                             req.stay.discharged_at.date()), earlier)
    recent = [supervision.SettlementSeen(sid, institution, datetime.fromisoformat(at))
              for sid, institution, at in facts["recent"] or ()]
    hits += supervision.two_institutions(
        supervision.SettlementSeen(settlement_id, req.institution, now), recent)
    review = supervision.review(credit_of(req.institution), hits,
                                supervision.sample_point(settlement_id))
    flags = [await supervision_flag(conn, settlement_id, ref, req.institution, h,
                                    to_review=review.to_review) for h in hits]
    d = request_digest(req)
    if supervision.refuses(hits):
        reason = "deceased" if any(h.rule_id == supervision.DECEASED for h in hits) \
            else "audit_refused"
        answer = {"status": "rejected", "settlement_id": settlement_id, "reason": reason}
        await conn.execute(
            """INSERT INTO settlements (settlement_id, out_biz_no, institution, visit_id,
                   identity_id, person_id, patient_ref, request_digest, status, reason, answer)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'rejected', $9, $10)""",
            settlement_id, req.out_biz_no, req.institution, req.visit_id, req.identity_id,
            person_id, ref, d, reason, (answer))
        await emit_all(conn, [*flags, SettlementRejected(
            settlement_id=settlement_id, institution=req.institution, visit_id=req.visit_id,
            reason=reason, fields=(FieldError(field="identity_id", code=reason),),
            rejected_at=now)])
        return answer

    before = _acc(facts["figures"])
    stay_used = (facts["stay_used"] or ZERO) if req.stay is not None else ZERO
    inputs = payers.SettlementRequest(
        lines=tuple(lines),
        person=payers.Person(Scheme(facts["scheme"]), AssistanceCategory(facts["assistance"])),
        setting=CareSetting(req.setting.value), level=level, accumulators=before,
        stay_deductible_used=stay_used)
    b = payers.settle(policy, inputs)
    after = b.accumulators_after
    if req.stay is not None:
        await conn.execute(
            """INSERT INTO stay_deductibles (visit_id, used) VALUES ($1, $2)
               ON CONFLICT (visit_id) DO UPDATE SET used = excluded.used""",
            req.visit_id, b.stay_deductible_after)
        await conn.execute(
            """INSERT INTO stays (person_id, visit_id, institution, admitted_on, discharged_on,
                   settlement_id) VALUES ($1, $2, $3, $4, $5, $6)""",
            person_id, req.visit_id, req.institution, req.stay.admitted_at.date(),
            req.stay.discharged_at.date(), settlement_id)
    if charges:
        await conn.execute(
            """UPDATE visit_charges SET settled_in = $1
               WHERE (source, charge_id) IN (SELECT * FROM unnest($2::text[], $3::text[]))""",
            settlement_id, [c["source"] for c in charges], [c["charge_id"] for c in charges])
    earlier_settlement = facts["earlier_settlement"]
    breakdown = breakdown_json(b)
    answer = {"status": "completed", "settlement_id": settlement_id, "patient_ref": ref,
              **breakdown, "explanation": explain(b),
              "charges": [{"source": c["source"], "charge_id": c["charge_id"]} for c in charges],
              "supplementary_of": earlier_settlement, "settled_at": now.isoformat()}
    events: list = [SettlementCompleted(
        settlement_id=settlement_id, visit_id=req.visit_id, patient_ref=ref,
        institution=req.institution, setting=req.setting, mode=req.mode,
        scheme=b.scheme.value, assistance_category=b.assistance_category.value, level=b.level,
        policy_version=b.policy_version, total=b.total, policy_range=b.policy_range,
        outside_range=b.outside_range, deductible=b.deductible, basic=b.basic,
        critical_illness=b.critical_illness, large_amount_subsidy=b.large_amount_subsidy,
        assistance=b.assistance, out_of_pocket=b.out_of_pocket,
        steps=tuple(StepPart(rule=s.rule.value, amount=s.amount) for s in b.steps),
        supplementary_of=earlier_settlement, settled_at=now), *flags]
    formerly_poor = poverty_watch.is_formerly_poor(policy, b.assistance_category,
                                                   facts["formerly_poor"])
    alert = poverty_watch.high_out_of_pocket(policy, formerly_poor, before.out_of_pocket,
                                             after.out_of_pocket)
    if alert is not None:
        await conn.execute(
            """INSERT INTO alerts (settlement_id, patient_ref, threshold, out_of_pocket,
                   formerly_poor) VALUES ($1, $2, $3, $4, $5)""",
            settlement_id, ref, alert.threshold, alert.out_of_pocket, formerly_poor)
        events.append(HighOutOfPocketAlert(
            settlement_id=settlement_id, patient_ref=ref, region=facts["region"],
            policy_version=alert.policy_version, formerly_poor=formerly_poor,
            threshold=alert.threshold, out_of_pocket=alert.out_of_pocket, raised_at=now))
    await conn.execute(
        _RECORD, person_id, year, {k: str(v) for k, v in after.as_dict().items()},
        settlement_id, [i.item_code for i in items], [i.service_date for i in items],
        [i.quantity for i in items], req.out_biz_no, req.institution, req.visit_id,
        req.identity_id, ref, d, payers.request_to_json(inputs), b.policy_version, breakdown,
        answer, earlier_settlement, now, *events_arguments(events))
    return answer


def breakdown_json(b: payers.Breakdown) -> dict[str, Any]:
    money = ("total", "policy_range", "outside_range", "fully_self_paid", "over_limit",
             "first_self_pay", "deductible", "basic", "large_amount_subsidy",
             "critical_illness", "assistance", "out_of_pocket", "policy_range_out_of_pocket")
    return {
        "policy_version": b.policy_version, "scheme": b.scheme.value,
        "assistance_category": b.assistance_category.value, "setting": b.setting.value,
        "level": b.level, **{k: f"{getattr(b, k):.2f}" for k in money},
        "steps": [{"rule": s.rule.value, "amount": f"{s.amount:.2f}", "params": dict(s.params)}
                  for s in b.steps],
    }


async def recompute(conn: asyncpg.Connection, settlement_id: str) -> dict[str, Any]:
    """The stored settlement recomputed from its stored inputs and policy version."""
    row = await conn.fetchrow("SELECT inputs, policy_version FROM settlements "
                              "WHERE settlement_id = $1", settlement_id)
    b = payers.settle(policy_by_version(row["policy_version"]),
                      payers.request_from_json(row["inputs"]))
    return breakdown_json(b)


async def reverse(conn: asyncpg.Connection, req: SettlementReversalRequested, *,
                  sender_institution: str | None) -> dict[str, Any]:
    """冲正: take a completed settlement back (latest first); restore the accumulators."""
    if sender_institution not in (None, req.institution):
        raise Refused("forbidden_institution", [("institution", "forbidden_institution")])
    await locking.lock_settlement(conn, req.settlement_id)
    row = await conn.fetchrow(
        "SELECT * FROM settlements WHERE settlement_id = $1 AND institution = $2",
        req.settlement_id, req.institution)
    if row is None or row["status"] == "rejected":
        raise Refused("unknown_settlement", [("settlement_id", "not_found")])
    if row["status"] == "reversed":
        return {"status": "reversed", "settlement_id": req.settlement_id,
                "reversed_at": row["reversed_at"].isoformat()}
    await locking.lock_person(conn, row["person_id"])
    later = await conn.fetchval(
        """SELECT true FROM settlements WHERE person_id = $1 AND year = $2
             AND status = 'completed' AND seq > $3 LIMIT 1""",
        row["person_id"], row["year"], row["seq"])
    if later:
        raise Refused("not_latest", [("settlement_id", "not_latest")])
    b = payers.settle(policy_by_version(row["policy_version"]),
                      payers.request_from_json(row["inputs"]))
    figures = await conn.fetchval(
        "SELECT figures FROM accumulators WHERE person_id = $1 AND year = $2",
        row["person_id"], row["year"])
    stay = await conn.fetchval("SELECT used FROM stay_deductibles WHERE visit_id = $1",
                               row["visit_id"])
    granted = await conn.fetchval(
        "SELECT coalesce(sum(amount), 0) FROM safety_net_grants WHERE settlement_id = $1",
        req.settlement_id)
    current = _acc(figures)
    if granted:
        current = current.plus({"out_of_pocket": granted, "safety_net_paid": -granted})
    restored, stay_after = payers.reverse(current, stay if stay is not None else ZERO, b)
    await conn.execute("UPDATE accumulators SET figures = $3 WHERE person_id = $1 AND year = $2",
                       row["person_id"], row["year"],
                       ({k: str(v) for k, v in restored.as_dict().items()}))
    if stay is not None:
        await conn.execute("UPDATE stay_deductibles SET used = $2 WHERE visit_id = $1",
                           row["visit_id"], stay_after)
    await conn.execute("DELETE FROM stays WHERE settlement_id = $1", req.settlement_id)
    await conn.execute("DELETE FROM settled_items WHERE settlement_id = $1", req.settlement_id)
    await conn.execute("UPDATE visit_charges SET settled_in = NULL WHERE settled_in = $1",
                       req.settlement_id)
    reversed_at = await conn.fetchval(
        """UPDATE settlements SET status = 'reversed', reversed_at = db_now()
           WHERE settlement_id = $1 RETURNING reversed_at""", req.settlement_id)
    await emit_all(conn, [SettlementReversed(
        settlement_id=req.settlement_id, visit_id=row["visit_id"], patient_ref=row["patient_ref"],
        institution=req.institution, reason=req.reason, total=b.total, basic=b.basic,
        critical_illness=b.critical_illness, large_amount_subsidy=b.large_amount_subsidy,
        assistance=b.assistance, out_of_pocket=b.out_of_pocket, reversed_at=reversed_at)])
    return {"status": "reversed", "settlement_id": req.settlement_id,
            "reversed_at": reversed_at.isoformat()}


def _intake(fn) -> Handler:
    async def handle(intake: Intake) -> None:
        try:
            await fn(intake.conn, intake.event, sender_institution=intake.sender.institution_id
                     if intake.sender else None)
        except Refused as refused:
            raise Rejection(refused.code, refused.fields) from None

    return handle


HANDLERS: dict[str, Handler] = {
    SettlementRequested.CE_TYPE: _intake(settle),
    SettlementReversalRequested.CE_TYPE: _intake(reverse),
}


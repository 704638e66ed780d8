"""Fund supervision (智能审核): the audit rules as functions over data.

Each rule (policy/supervision.yaml) has an id, a grade (suspicious 可疑 /
definite 明确), a stage (before 事前 / during 事中 / after 事后) and parameters;
a hit carries evidence as codes and values, never free text. The service
raises `AuditFlagRaised` for each hit and refuses a settlement with a
definite hit at stage `before` (`refuses`). `bill_hits` is the counter's
pre-check (事前提醒): the rules an itemised bill would trip. The
institution's credit level decides what goes to the auditor (`review`).

Pure: the packaged YAML is read once (cached), nothing else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import cache
from importlib.resources import files
from typing import Any

import yaml
from yigongti_contracts.common import Sex


class Grade(StrEnum):
    suspicious = "suspicious"  # 可疑
    definite = "definite"  # 明确


class Stage(StrEnum):
    before = "before"  # 事前
    during = "during"  # 事中
    after = "after"  # 事后


class CreditLevel(StrEnum):
    red = "red"  # 红名单, trusted
    grey = "grey"  # 灰名单, watched
    black = "black"  # 黑名单, distrusted


DECEASED = "deceased_credential"
DUPLICATE = "duplicate_item_same_day"
HBA1C = "hba1c_frequency"
SEX = "sex_specific_item"
READMISSION = "readmission_15_days"
TWO_INSTITUTIONS = "two_institutions_window"
LATE_CHARGE = "charge_posted_after_settlement"
LATE_REVERSAL = "charge_reversed_after_settlement"


@dataclass(frozen=True)
class RuleSpec:
    id: str
    grade: Grade
    stage: Stage
    params: Mapping[str, Any]


@dataclass(frozen=True)
class Evidence:
    code: str
    value: str


@dataclass(frozen=True)
class Hit:
    rule_id: str
    grade: Grade
    stage: Stage
    evidence: tuple[Evidence, ...]

    def facts(self) -> dict[str, str]:
        return {e.code: e.value for e in self.evidence}


def _hit(spec: RuleSpec, **facts: object) -> Hit:
    return Hit(spec.id, spec.grade, spec.stage,
               tuple(Evidence(code, str(value)) for code, value in facts.items()))


@dataclass(frozen=True)
class ServiceItem:
    """One charged item as the rules see it: what, when, how many."""

    item_code: str
    service_date: date
    quantity: int = 1


@dataclass(frozen=True)
class Stay:
    stay_id: str
    institution: str
    admitted_on: date
    discharged_on: date | None = None
    planned: bool = False  # a planned cycle (chemo/radiotherapy), not a readmission


@dataclass(frozen=True)
class SettlementSeen:
    """A settlement on the stream, for the two-institutions rule."""

    settlement_id: str
    institution: str
    settled_at: datetime


@dataclass(frozen=True)
class ReviewPolicy:
    review_grades: frozenset[Grade]
    sample_share: Decimal


@cache
def _raw() -> Any:
    return yaml.safe_load(
        (files("yigongti_settlement") / "policy" / "supervision.yaml").read_text("utf-8"))


@cache
def load_rules() -> Mapping[str, RuleSpec]:
    return {r["id"]: RuleSpec(r["id"], Grade(r["grade"]), Stage(r["stage"]),
                              {k: v["value"] for k, v in (r.get("params") or {}).items()})
            for r in _raw()["rules"]}


@cache
def load_credit_levels() -> Mapping[CreditLevel, ReviewPolicy]:
    return {CreditLevel(level): ReviewPolicy(frozenset(Grade(g) for g in raw["review_grades"]),
                                             Decimal(raw["sample_share"]))
            for level, raw in _raw()["credit_levels"].items()}


def _spec(rule_id: str, spec: RuleSpec | None) -> RuleSpec:
    return spec if spec is not None else load_rules()[rule_id]


# --- the rules ---------------------------------------------------------------------------


def deceased_credential(died_on: date | None, presented_on: date,
                        items: Sequence[ServiceItem] = (), spec: RuleSpec | None = None
                        ) -> Hit | None:
    """A dead person's credential presented, or a service dated, after the date of death.

    Services on the day of death (an in-hospital death) are not a hit."""
    spec = _spec(DECEASED, spec)
    if died_on is None:
        return None
    late = sorted(i.service_date for i in items if i.service_date > died_on)
    if presented_on <= died_on and not late:
        return None
    facts: dict[str, object] = {"died_on": died_on.isoformat(),
                                "presented_on": presented_on.isoformat()}
    if late:
        facts["first_service_after_death"] = late[0].isoformat()
        facts["services_after_death"] = len(late)
    return _hit(spec, **facts)


def duplicate_items(items: Sequence[ServiceItem], history: Sequence[ServiceItem] = (),
                    spec: RuleSpec | None = None) -> list[Hit]:
    """The same diagnostic item more than once for the patient on one day.

    `history` holds the patient's items already settled; a day counts only if
    the bill adds to it."""
    spec = _spec(DUPLICATE, spec)
    prefixes = tuple(spec.params["item_prefixes"])
    counts: dict[tuple[str, date], list[int]] = {}
    for source, group in ((0, history), (1, items)):
        for item in group:
            if item.item_code.startswith(prefixes):
                counts.setdefault((item.item_code, item.service_date), [0, 0])[source] += item.quantity
    return [_hit(spec, item_code=code, service_date=day.isoformat(), count=old + new,
                 already_settled=old)
            for (code, day), (old, new) in sorted(counts.items()) if new and old + new > 1]


def hba1c_frequency(items: Sequence[ServiceItem], history: Sequence[ServiceItem] = (),
                    spec: RuleSpec | None = None) -> list[Hit]:
    """An HbA1c test less than `window_days` after the patient's previous one.

    The later test of each close pair is flagged, if it is on this bill."""
    spec = _spec(HBA1C, spec)
    codes = set(spec.params["item_codes"])
    window = int(spec.params["window_days"])
    if int(spec.params["max_in_window"]) != 1:
        raise ValueError("hba1c_frequency counts pairs: max_in_window must be 1")
    tests = sorted([(i.service_date, 0, i.item_code) for i in history if i.item_code in codes
                    for _ in range(i.quantity)]
                   + [(i.service_date, 1, i.item_code) for i in items if i.item_code in codes
                      for _ in range(i.quantity)])
    hits = []
    for (prev_day, _, _), (day, on_bill, code) in zip(tests, tests[1:], strict=False):
        gap = (day - prev_day).days
        if on_bill and gap < window:
            hits.append(_hit(spec, item_code=code, service_date=day.isoformat(),
                             previous_date=prev_day.isoformat(), days_between=gap,
                             window_days=window))
    return hits


def sex_specific(sex: Sex, items: Sequence[ServiceItem], spec: RuleSpec | None = None
                 ) -> list[Hit]:
    """Items for one sex only charged to a patient of the other (unknown sex: no hit)."""
    spec = _spec(SEX, spec)
    wrong = {Sex.female: (set(spec.params["male_only"]), Sex.male),
             Sex.male: (set(spec.params["female_only"]), Sex.female)}.get(sex)
    if wrong is None:
        return []
    codes, item_sex = wrong
    return [_hit(spec, item_code=code, patient_sex=sex.value, item_sex=item_sex.value)
            for code in sorted({i.item_code for i in items if i.item_code in codes})]


def readmission(stay: Stay, earlier: Sequence[Stay], spec: RuleSpec | None = None
                ) -> list[Hit]:
    """Admitted within `window_days` of a discharge (any institution): a split stay?"""
    spec = _spec(READMISSION, spec)
    if stay.planned:
        return []
    window = int(spec.params["window_days"])
    hits = []
    for prev in sorted(earlier, key=lambda s: (s.admitted_on, s.stay_id)):
        if prev.stay_id == stay.stay_id or prev.discharged_on is None:
            continue
        gap = (stay.admitted_on - prev.discharged_on).days
        if 0 <= gap <= window:
            hits.append(_hit(spec, previous_stay=prev.stay_id,
                             previous_institution=prev.institution,
                             previous_discharged_on=prev.discharged_on.isoformat(),
                             admitted_on=stay.admitted_on.isoformat(), days_between=gap))
    return hits


def two_institutions(new: SettlementSeen, recent: Sequence[SettlementSeen],
                     spec: RuleSpec | None = None) -> list[Hit]:
    """The same person settling at another institution within `window_minutes`
    (the stream rule; `recent` are the person's earlier settlements)."""
    spec = _spec(TWO_INSTITUTIONS, spec)
    window = timedelta(minutes=int(spec.params["window_minutes"]))
    hits = []
    for other in sorted(recent, key=lambda s: (s.settled_at, s.settlement_id)):
        gap = abs(new.settled_at - other.settled_at)
        if other.institution != new.institution and gap <= window:
            hits.append(_hit(spec, other_settlement=other.settlement_id,
                             other_institution=other.institution,
                             minutes_between=int(gap.total_seconds() // 60),
                             window_minutes=int(window.total_seconds() // 60)))
    return hits


def still_in_window(recent: Sequence[SettlementSeen], now: datetime,
                    spec: RuleSpec | None = None) -> list[SettlementSeen]:
    """The settlements a stream processor must keep for the rule (drop older ones)."""
    spec = _spec(TWO_INSTITUTIONS, spec)
    window = timedelta(minutes=int(spec.params["window_minutes"]))
    return [s for s in recent if now - s.settled_at <= window]


def late_charge(rule_id: str, *, charge_id: str, source: str, amount: Decimal,
                settled_in: str, spec: RuleSpec | None = None) -> Hit:
    """A charge posted or reversed after its visit was settled: the audit note."""
    return _hit(_spec(rule_id, spec), charge_id=charge_id, source=source, amount=amount,
                settled_in=settled_in)


# --- the counter's pre-check, refusal and review -----------------------------------------------


def bill_hits(items: Sequence[ServiceItem], *, sex: Sex, died_on: date | None,
              presented_on: date, history: Sequence[ServiceItem] = ()) -> list[Hit]:
    """Every bill rule an itemised bill trips (事前提醒, and again at settlement)."""
    hits: list[Hit] = []
    dead = deceased_credential(died_on, presented_on, items)
    if dead is not None:
        hits.append(dead)
    hits += duplicate_items(items, history)
    hits += hba1c_frequency(items, history)
    hits += sex_specific(sex, items)
    return hits


def refuses(hits: Sequence[Hit]) -> bool:
    """A definite hit before settlement refuses it (a deceased person's credential)."""
    return any(h.grade is Grade.definite and h.stage is Stage.before for h in hits)


def sample_point(key: str) -> Decimal:
    """A settlement's fixed place in [0, 1) for sampling, from its id (deterministic)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return Decimal(int.from_bytes(digest[:4], "big")) / Decimal(2**32)


@dataclass(frozen=True)
class Review:
    to_review: bool
    reasons: tuple[str, ...]  # "hit:<rule id>" and/or "sample"


def review(credit: CreditLevel, hits: Sequence[Hit], point: Decimal) -> Review:
    """Whether a settlement goes to the auditor, given the institution's credit level."""
    policy = load_credit_levels()[credit]
    reasons = [f"hit:{rule}" for rule in sorted({h.rule_id for h in hits
                                                  if h.grade in policy.review_grades})]
    if point < policy.sample_share:
        reasons.append("sample")
    return Review(bool(reasons), tuple(reasons))

"""The three payers of one settlement (三重保障 一站式结算), DESIGN §5 "Settlement".

`settle(policy, request)` splits an itemised bill and pays it in the fixed
order of domain-rules.md §1.1:

1. Items. Each line is split into the policy range (政策范围内) and what the
   patient pays outright: 丙类 and out-of-catalogue lines (全自费), the part of
   the unit price above its price limit (超限价), and the share of a 乙类 line
   outside the range (乙类先行自付). Only the policy range reaches the payers.
2. Basic insurance (基本医保): (policy range − deductible) × ratio by scheme
   and institution level, up to the fund's remaining annual cap. The inpatient
   deductible is per stay (`stay_deductible_used` carries what an earlier
   settlement of the same stay already met); outpatient pooling (门诊统筹) has
   an annual deductible, its own ratios and an annual limit.
3. Second tier: 大病保险 for residents, 职工大额医疗费用补助 for employees, on the
   year's cumulative policy-range out-of-pocket left after basic insurance,
   above the threshold, by bands, up to the cap; 低保, 特困 and returned-to-
   poverty residents get the threshold halved, +5 points and no cap.
4. Medical assistance (医疗救助) by category, on the year's cumulative
   policy-range out-of-pocket left after the first two payers, above the
   category's annual deductible, up to its annual cap.
5. The rest is out-of-pocket. Safety-net assistance (托底) is not part of the
   counter's calculation: `grant_safety_net` applies a later grant.

The annual payers (3 and 4) are cumulative: a settlement pays the year's
entitlement on the new cumulative base less what the year has already paid.
So splitting a year's bills into several settlements leaves their annual
totals exactly as one settlement would. A settlement never pays more than its
own remaining policy-range amount, so if a person's category changes during
the year (say, to 低保), the new terms reach the year's earlier costs only as
later settlements leave room. Referral status does not change any ratio in
this version (domain-rules.md §7 has lower ratios for unreferred care).

Money is Decimal yuan with two places. Rounding (half up) happens only here:
- per line: the part within the price limit (limit × quantity, when the unit
  price is above it) and the policy-range part (that × the category's share);
  the over-limit part and the first self-pay are the exact remainders;
- basic insurance: (policy range − deductible) × ratio, once per settlement;
- second tier and assistance: the year's entitlement, once per settlement;
- thresholds and deductibles derived from income, once when the table loads.
Every other figure is a sum or a difference of rounded figures, so the parts
add up to the total to the cent by construction.

Pure functions; nothing here reads or writes anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from enum import StrEnum
from typing import Any

from .benefits import (
    AssistanceCategory,
    Band,
    CareSetting,
    ItemCategory,
    PolicyTable,
    Scheme,
    SecondTier,
    cents,
)

ZERO = Decimal("0.00")


def _money(value: Decimal, name: str) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError(f"{name} must be a finite Decimal")
    if value != cents(value):
        raise ValueError(f"{name} has more than two decimal places")
    if value < 0:
        raise ValueError(f"{name} is negative")
    return cents(value)


@dataclass(frozen=True)
class ChargeLine:
    """One item of the bill: amount = quantity × unit price, to the cent."""

    item_code: str
    category: ItemCategory
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    price_limit: Decimal | None = None  # 最高限价 of the unit price, if the item has one

    def __post_init__(self) -> None:
        object.__setattr__(self, "category", ItemCategory(self.category))
        if not isinstance(self.quantity, Decimal) or not self.quantity > 0:
            raise ValueError("quantity must be a positive Decimal")
        object.__setattr__(self, "unit_price", _money(self.unit_price, "unit_price"))
        object.__setattr__(self, "amount", _money(self.amount, "amount"))
        if self.price_limit is not None:
            object.__setattr__(self, "price_limit", _money(self.price_limit, "price_limit"))
        if self.amount != cents(self.quantity * self.unit_price):
            raise ValueError("amount must be quantity × unit_price, rounded to the cent")


@dataclass(frozen=True)
class Person:
    scheme: Scheme
    assistance: AssistanceCategory = AssistanceCategory.none

    def __post_init__(self) -> None:
        object.__setattr__(self, "scheme", Scheme(self.scheme))
        object.__setattr__(self, "assistance", AssistanceCategory(self.assistance))


@dataclass(frozen=True)
class Accumulators:
    """One person's figures for the insurance year, all yuan.

    `*_base` are the cumulative amounts the annual payers act on (their
    thresholds, bands, deductibles and caps are annual)."""

    outpatient_deductible_used: Decimal = ZERO
    basic_paid: Decimal = ZERO  # both settings, against the fund's annual cap
    outpatient_basic_paid: Decimal = ZERO  # against the outpatient annual limit
    critical_illness_base: Decimal = ZERO
    critical_illness_paid: Decimal = ZERO
    large_amount_subsidy_base: Decimal = ZERO
    large_amount_subsidy_paid: Decimal = ZERO
    assistance_base: Decimal = ZERO
    assistance_paid: Decimal = ZERO
    policy_range_out_of_pocket: Decimal = ZERO  # at the counter, before any 托底
    out_of_pocket: Decimal = ZERO  # all the person paid, less 托底 granted
    safety_net_paid: Decimal = ZERO

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _money(getattr(self, f.name), f.name))

    def as_dict(self) -> dict[str, Decimal]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def plus(self, delta: Mapping[str, Decimal]) -> Accumulators:
        return replace(self, **{k: getattr(self, k) + v for k, v in delta.items()})


@dataclass(frozen=True)
class SettlementRequest:
    """What one settlement is computed from; stored with it for recomputation."""

    lines: tuple[ChargeLine, ...]
    person: Person
    setting: CareSetting
    level: int  # of the institution where the visit is settled (1/2/3)
    accumulators: Accumulators = field(default_factory=Accumulators)
    stay_deductible_used: Decimal = ZERO  # inpatient: deductible already met on this stay

    def __post_init__(self) -> None:
        object.__setattr__(self, "lines", tuple(self.lines))
        object.__setattr__(self, "setting", CareSetting(self.setting))
        if self.level not in (1, 2, 3):
            raise ValueError("level must be 1, 2 or 3")
        object.__setattr__(self, "stay_deductible_used",
                           _money(self.stay_deductible_used, "stay_deductible_used"))
        if self.setting is CareSetting.outpatient and self.stay_deductible_used:
            raise ValueError("an outpatient settlement has no stay deductible")


class Rule(StrEnum):
    """The rule applied at a step; explanation.py renders each in Chinese."""

    items = "items"
    basic_inpatient = "basic.inpatient"
    basic_outpatient = "basic.outpatient"
    critical_illness = "critical_illness"
    large_amount_subsidy = "large_amount_subsidy"
    second_tier_not_in_setting = "second_tier.not_in_setting"
    assistance = "assistance"
    assistance_not_eligible = "assistance.not_eligible"
    assistance_not_in_setting = "assistance.not_in_setting"
    out_of_pocket = "out_of_pocket"


@dataclass(frozen=True)
class Step:
    rule: Rule
    amount: Decimal  # what this step paid (items: the policy-range amount)
    params: Mapping[str, str]  # the parameters used, as plain strings


@dataclass(frozen=True)
class Breakdown:
    """A completed settlement's figures (all yuan, two places)."""

    policy_version: str
    scheme: Scheme
    assistance_category: AssistanceCategory
    setting: CareSetting
    level: int
    total: Decimal
    policy_range: Decimal
    outside_range: Decimal  # = fully_self_paid + over_limit + first_self_pay
    fully_self_paid: Decimal  # 全自费: 丙类 and out of catalogue
    over_limit: Decimal  # 超限价
    first_self_pay: Decimal  # 乙类先行自付
    deductible: Decimal  # applied by basic insurance in this settlement
    basic: Decimal
    large_amount_subsidy: Decimal
    critical_illness: Decimal
    assistance: Decimal
    out_of_pocket: Decimal
    policy_range_out_of_pocket: Decimal
    steps: tuple[Step, ...]
    accumulators_before: Accumulators
    accumulators_after: Accumulators
    stay_deductible_before: Decimal
    stay_deductible_after: Decimal

    @property
    def payers(self) -> Decimal:
        """The three payers together (the seeds' "报销")."""
        return self.basic + self.large_amount_subsidy + self.critical_illness + self.assistance


def _s(value: Decimal | int | bool | str) -> str:
    return str(value)


# --- 1. items -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Split:
    policy_range: Decimal = ZERO
    fully_self_paid: Decimal = ZERO
    over_limit: Decimal = ZERO
    first_self_pay: Decimal = ZERO


def split_line(policy: PolicyTable, line: ChargeLine) -> _Split:
    """A line's policy-range part and its outside-range parts (they add up to its amount)."""
    share = policy.category_share[line.category]
    if share == 0:
        return _Split(fully_self_paid=line.amount)
    within = line.amount
    if line.price_limit is not None and line.unit_price > line.price_limit:
        # the line as if billed at the limit; rounding it (not the excess) keeps
        # the policy range non-decreasing in both quantity and unit price
        within = cents(line.price_limit * line.quantity)
    over = line.amount - within
    in_range = cents(within * share)
    return _Split(policy_range=in_range, over_limit=over, first_self_pay=within - in_range)


def _split(policy: PolicyTable, lines: Sequence[ChargeLine]) -> _Split:
    parts = [split_line(policy, line) for line in lines]
    return _Split(*(sum((getattr(p, f.name) for p in parts), ZERO) for f in fields(_Split)))


# --- 2. basic insurance ------------------------------------------------------------------


def _basic(policy: PolicyTable, req: SettlementRequest, policy_range: Decimal
           ) -> tuple[Decimal, Decimal, Step]:
    """(deductible applied, basic paid, step)."""
    terms = policy.basic[req.person.scheme]
    acc = req.accumulators
    cap_left = max(ZERO, terms.annual_cap - acc.basic_paid)
    if req.setting is CareSetting.inpatient:
        full_deductible = terms.inpatient_deductible[req.level]
        already = req.stay_deductible_used
        ratio = terms.inpatient_ratio[req.level]
        rule = Rule.basic_inpatient
        limit = terms.annual_cap
    else:
        full_deductible = terms.outpatient_deductible
        already = acc.outpatient_deductible_used
        ratio = terms.outpatient_ratio[req.level]
        rule = Rule.basic_outpatient
        cap_left = min(cap_left,
                       max(ZERO, terms.outpatient_annual_limit - acc.outpatient_basic_paid))
        limit = terms.outpatient_annual_limit
    deductible = min(policy_range, max(ZERO, full_deductible - already))
    by_ratio = cents((policy_range - deductible) * ratio)
    paid = min(by_ratio, cap_left)
    return deductible, paid, Step(rule, paid, {
        "level": _s(req.level),
        "deductible": _s(full_deductible),
        "deductible_already_met": _s(min(already, full_deductible)),
        "deductible_applied": _s(deductible),
        "ratio": _s(ratio),
        "annual_limit": _s(limit),
        "limit_left_before": _s(cap_left),
        "capped": _s(paid < by_ratio),
    })


# --- 3. second tier ------------------------------------------------------------------------


def banded(excess: Decimal, bands: Sequence[Band], points: Decimal) -> Decimal:
    """Σ over the bands of the part of `excess` in the band × (ratio + points), unrounded."""
    pay, rest = Decimal(0), excess
    for band in bands:
        if rest <= 0:
            break
        part = rest if band.width is None else min(rest, band.width)
        pay += part * (band.ratio + points)
        rest -= part
    return pay


@dataclass(frozen=True)
class SecondTierTerms:
    """A tier's terms for one person (tilted or not)."""

    tilted: bool
    threshold: Decimal
    points: Decimal
    cap: Decimal | None  # None: no cap


def second_tier_terms(tier: SecondTier, category: AssistanceCategory) -> SecondTierTerms:
    tilted = category in tier.tilt_categories
    if not tilted:
        return SecondTierTerms(False, tier.threshold, Decimal(0), tier.annual_cap)
    return SecondTierTerms(
        True, cents(tier.threshold * tier.tilt_threshold_factor), tier.tilt_ratio_points,
        None if tier.tilt_removes_cap else tier.annual_cap)


def second_tier_entitlement(tier: SecondTier, terms: SecondTierTerms, base: Decimal) -> Decimal:
    """What the tier owes for the whole year on a cumulative base, to the cent."""
    owed = cents(banded(max(Decimal(0), base - terms.threshold), tier.bands, terms.points))
    return owed if terms.cap is None else min(owed, terms.cap)


def _second_tier(policy: PolicyTable, req: SettlementRequest, after_basic: Decimal
                 ) -> tuple[str | None, Decimal, Step]:
    """(accumulator prefix or None, paid, step)."""
    tier = policy.second_tier.get(req.person.scheme)
    if tier is None or req.setting not in tier.settings:
        return None, ZERO, Step(Rule.second_tier_not_in_setting, ZERO, {
            "tier": tier.code if tier else "none", "setting": req.setting.value})
    terms = second_tier_terms(tier, req.person.assistance)
    base_before = getattr(req.accumulators, f"{tier.code}_base")
    paid_before = getattr(req.accumulators, f"{tier.code}_paid")
    base_after = base_before + after_basic
    owed = second_tier_entitlement(tier, terms, base_after)
    paid = min(after_basic, max(ZERO, owed - paid_before))
    return tier.code, paid, Step(Rule(tier.code), paid, {
        "tilted": _s(terms.tilted),
        "threshold": _s(terms.threshold),
        "standard_threshold": _s(tier.threshold),
        "bands": ";".join(f"{'rest' if b.width is None else b.width}@{b.ratio + terms.points}"
                          for b in tier.bands),
        "cap": "none" if terms.cap is None else _s(terms.cap),
        "year_base_before": _s(base_before),
        "year_base_after": _s(base_after),
        "year_owed": _s(owed),
        "year_paid_before": _s(paid_before),
    })


# --- 4. medical assistance -------------------------------------------------------------------


def assistance_entitlement(policy: PolicyTable, category: AssistanceCategory,
                           base: Decimal) -> Decimal:
    """What assistance owes for the whole year on a cumulative base, to the cent."""
    terms = policy.assistance[category]
    return min(terms.annual_cap, cents(max(Decimal(0), base - terms.deductible) * terms.ratio))


def _assistance(policy: PolicyTable, req: SettlementRequest, after_second: Decimal
                ) -> tuple[bool, Decimal, Step]:
    """(eligible, paid, step)."""
    category = req.person.assistance
    if category is AssistanceCategory.none or category not in policy.assistance:
        return False, ZERO, Step(Rule.assistance_not_eligible, ZERO, {"category": category.value})
    if req.setting not in policy.assistance_settings:
        return False, ZERO, Step(Rule.assistance_not_in_setting, ZERO, {
            "category": category.value, "setting": req.setting.value})
    terms = policy.assistance[category]
    acc = req.accumulators
    base_after = acc.assistance_base + after_second
    owed = assistance_entitlement(policy, category, base_after)
    paid = min(after_second, max(ZERO, owed - acc.assistance_paid))
    return True, paid, Step(Rule.assistance, paid, {
        "category": category.value,
        "deductible": _s(terms.deductible),
        "ratio": _s(terms.ratio),
        "annual_cap": _s(terms.annual_cap),
        "year_base_before": _s(acc.assistance_base),
        "year_base_after": _s(base_after),
        "year_owed": _s(owed),
        "year_paid_before": _s(acc.assistance_paid),
        "capped": _s(owed == terms.annual_cap and owed > 0),
    })


# --- the settlement ------------------------------------------------------------------------


def settle(policy: PolicyTable, req: SettlementRequest) -> Breakdown:
    """The breakdown of one settlement and the person's new accumulators."""
    if req.person.scheme not in policy.basic:
        raise ValueError(f"policy {policy.version} has no {req.person.scheme} scheme")
    acc = req.accumulators
    split = _split(policy, req.lines)
    total = sum((line.amount for line in req.lines), ZERO)
    outside = split.fully_self_paid + split.over_limit + split.first_self_pay
    items = Step(Rule.items, split.policy_range, {
        "total": _s(total),
        "fully_self_paid": _s(split.fully_self_paid),
        "over_limit": _s(split.over_limit),
        "first_self_pay": _s(split.first_self_pay),
        "share_b": _s(policy.category_share[ItemCategory.b]),
    })

    deductible, basic, basic_step = _basic(policy, req, split.policy_range)
    after_basic = split.policy_range - basic
    tier_code, second, second_step = _second_tier(policy, req, after_basic)
    after_second = after_basic - second
    eligible, assistance, assistance_step = _assistance(policy, req, after_second)
    range_oop = after_second - assistance
    oop = outside + range_oop
    oop_step = Step(Rule.out_of_pocket, oop, {
        "outside_range": _s(outside), "policy_range_out_of_pocket": _s(range_oop)})

    outpatient = req.setting is CareSetting.outpatient
    delta: dict[str, Decimal] = {
        "outpatient_deductible_used": deductible if outpatient else ZERO,
        "basic_paid": basic,
        "outpatient_basic_paid": basic if outpatient else ZERO,
        "assistance_base": after_second if eligible else ZERO,
        "assistance_paid": assistance,
        "policy_range_out_of_pocket": range_oop,
        "out_of_pocket": oop,
    }
    if tier_code is not None:
        delta[f"{tier_code}_base"] = after_basic
        delta[f"{tier_code}_paid"] = second
    stay_after = req.stay_deductible_used + (ZERO if outpatient else deductible)
    return Breakdown(
        policy_version=policy.version,
        scheme=req.person.scheme,
        assistance_category=req.person.assistance,
        setting=req.setting,
        level=req.level,
        total=total,
        policy_range=split.policy_range,
        outside_range=outside,
        fully_self_paid=split.fully_self_paid,
        over_limit=split.over_limit,
        first_self_pay=split.first_self_pay,
        deductible=deductible,
        basic=basic,
        large_amount_subsidy=second if tier_code == "large_amount_subsidy" else ZERO,
        critical_illness=second if tier_code == "critical_illness" else ZERO,
        assistance=assistance,
        out_of_pocket=oop,
        policy_range_out_of_pocket=range_oop,
        steps=(items, basic_step, second_step, assistance_step, oop_step),
        accumulators_before=acc,
        accumulators_after=acc.plus(delta),
        stay_deductible_before=req.stay_deductible_used,
        stay_deductible_after=stay_after,
    )


# --- reversal (冲正) and safety-net assistance (托底) ------------------------------------------


class ReversalMismatch(ValueError):
    """The accumulators do not hold this settlement (reversed twice, or another year's)."""


def reverse(accumulators: Accumulators, stay_deductible_used: Decimal,
            breakdown: Breakdown) -> tuple[Accumulators, Decimal]:
    """Take a settlement back out of the year's accumulators and its stay's deductible.

    Subtracts exactly what the settlement added, so reversing the latest
    settlement restores the accumulators it found. Reverse a person's
    settlements latest first (as the national 冲正 does): a later settlement's
    annual payers were computed on a base that included this one. Revoke any
    safety-net grant on the settlement first."""
    before, after = breakdown.accumulators_before.as_dict(), breakdown.accumulators_after.as_dict()
    now = accumulators.as_dict()
    restored = {k: now[k] - (after[k] - before[k]) for k in now}
    stay = stay_deductible_used - (breakdown.stay_deductible_after
                                   - breakdown.stay_deductible_before)
    if any(v < 0 for v in restored.values()) or stay < 0:
        raise ReversalMismatch("the accumulators do not contain this settlement")
    return Accumulators(**restored), stay


@dataclass(frozen=True)
class SafetyNetGrant:
    """托底救助 granted after review on a completed settlement."""

    policy_version: str  # of the settlement it is granted on
    amount: Decimal
    granted_before: Decimal  # earlier grants on the same settlement
    out_of_pocket_before: Decimal  # the settlement's out-of-pocket less earlier grants
    out_of_pocket_after: Decimal
    accumulators_before: Accumulators
    accumulators_after: Accumulators


def grant_safety_net(breakdown: Breakdown, accumulators: Accumulators, amount: Decimal,
                     granted_before: Decimal = ZERO) -> SafetyNetGrant:
    """Apply a granted safety-net amount to a completed settlement's out-of-pocket.

    The counter's figures of the settlement stay as they were (a completed
    settlement is never changed in place); the grant lowers what the person
    bears and the year's out-of-pocket. It cannot exceed what the person
    still bears on that settlement."""
    amount = _money(amount, "amount")
    granted_before = _money(granted_before, "granted_before")
    if amount == 0:
        raise ValueError("a grant is a positive amount")
    left = breakdown.out_of_pocket - granted_before
    if amount > left:
        raise ValueError(f"the grant exceeds the {left} yuan the person still bears")
    if amount > accumulators.out_of_pocket:
        raise ValueError("the accumulators do not contain this settlement's out-of-pocket")
    after = accumulators.plus({"out_of_pocket": -amount, "safety_net_paid": amount})
    return SafetyNetGrant(breakdown.policy_version, amount, granted_before, left,
                          left - amount, accumulators, after)


def revoke_safety_net(accumulators: Accumulators, grant: SafetyNetGrant) -> Accumulators:
    """Take a grant back out of the accumulators (before reversing its settlement)."""
    if accumulators.safety_net_paid < grant.amount:
        raise ReversalMismatch("the accumulators do not contain this grant")
    return accumulators.plus({"out_of_pocket": grant.amount, "safety_net_paid": -grant.amount})


# --- stored inputs -----------------------------------------------------------------------------


def request_to_json(req: SettlementRequest) -> dict[str, Any]:
    """The inputs as JSON-ready data (Decimals as strings), stored with the settlement."""
    return {
        "lines": [{
            "item_code": line.item_code, "category": line.category.value,
            "quantity": str(line.quantity), "unit_price": str(line.unit_price),
            "amount": str(line.amount),
            "price_limit": None if line.price_limit is None else str(line.price_limit),
        } for line in req.lines],
        "person": {"scheme": req.person.scheme.value,
                   "assistance": req.person.assistance.value},
        "setting": req.setting.value,
        "level": req.level,
        "accumulators": {k: str(v) for k, v in req.accumulators.as_dict().items()},
        "stay_deductible_used": str(req.stay_deductible_used),
    }


def request_from_json(data: Mapping[str, Any]) -> SettlementRequest:
    return SettlementRequest(
        lines=tuple(ChargeLine(
            item_code=raw["item_code"], category=ItemCategory(raw["category"]),
            quantity=Decimal(raw["quantity"]), unit_price=Decimal(raw["unit_price"]),
            amount=Decimal(raw["amount"]),
            price_limit=None if raw["price_limit"] is None else Decimal(raw["price_limit"]),
        ) for raw in data["lines"]),
        person=Person(Scheme(data["person"]["scheme"]),
                      AssistanceCategory(data["person"]["assistance"])),
        setting=CareSetting(data["setting"]),
        level=int(data["level"]),
        accumulators=Accumulators(**{k: Decimal(v) for k, v in data["accumulators"].items()}),
        stay_deductible_used=Decimal(data["stay_deductible_used"]),
    )

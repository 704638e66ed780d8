"""Invariants of the three-payer calculation (issue 13 «Checked by»), by hypothesis.

Accumulators are always reached by settling an earlier year of bills, so they
are states the service can be in."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from decimal import Decimal as D

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yigongti_settlement.benefits import (
    AssistanceCategory,
    CareSetting,
    ItemCategory,
    PolicyTable,
    Scheme,
    cents,
    load_policies,
    policy_by_version,
)
from yigongti_settlement.payers import (
    Accumulators,
    Breakdown,
    ChargeLine,
    Person,
    SettlementRequest,
    assistance_entitlement,
    grant_safety_net,
    request_from_json,
    request_to_json,
    reverse,
    revoke_safety_net,
    second_tier_entitlement,
    second_tier_terms,
    settle,
)

POLICY = policy_by_version("652300-2024.1")
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
CENT = D("0.01")


def money(lo: int, hi: int) -> st.SearchStrategy[D]:
    """Yuan with two places, from lo to hi cents."""
    return st.integers(lo, hi).map(lambda c: D(c).scaleb(-2))


unit_prices = st.one_of(money(1, 50_000), money(1, 15_000_000))  # to 500 / to 150,000 yuan


@st.composite
def charge_lines(draw) -> ChargeLine:
    unit = draw(unit_prices)
    quantity = D(draw(st.integers(1, 4)))
    limit = draw(st.none() | unit_prices)
    return ChargeLine(draw(st.sampled_from(["250302003", "330100001", "X0001"])),
                      draw(st.sampled_from(list(ItemCategory))), quantity, unit,
                      cents(unit * quantity), limit)


bills = st.lists(charge_lines(), min_size=1, max_size=5).map(tuple)
persons = st.builds(Person, st.sampled_from(list(Scheme)),
                    st.sampled_from(list(AssistanceCategory)))
visits = st.tuples(st.sampled_from(list(CareSetting)), st.sampled_from([1, 2, 3]), bills)
years = st.lists(visits, min_size=0, max_size=4)
policies = st.sampled_from(load_policies())


def run_year(policy: PolicyTable, person: Person, year) -> list[Breakdown]:
    """Settle the visits in order, each inpatient visit its own stay."""
    acc, out = Accumulators(), []
    for setting, level, bill in year:
        b = settle(policy, SettlementRequest(bill, person, setting, level, acc))
        out.append(b)
        acc = b.accumulators_after
    return out


def accumulators_after(policy, person, year) -> Accumulators:
    done = run_year(policy, person, year)
    return done[-1].accumulators_after if done else Accumulators()


FIGURES = ("total", "policy_range", "outside_range", "fully_self_paid", "over_limit",
           "first_self_pay", "deductible", "basic", "large_amount_subsidy", "critical_illness",
           "assistance", "out_of_pocket", "policy_range_out_of_pocket")


@SETTINGS
@given(policies, persons, years, visits)
def test_parts_add_up_to_the_total_to_the_cent_and_nothing_is_negative(policy, person, year, visit):
    acc = accumulators_after(policy, person, year)
    setting, level, bill = visit
    b = settle(policy, SettlementRequest(bill, person, setting, level, acc))
    assert b.total == sum(line.amount for line in bill)
    assert b.basic + b.large_amount_subsidy + b.critical_illness + b.assistance \
        + b.out_of_pocket == b.total
    assert b.policy_range + b.outside_range == b.total
    assert b.fully_self_paid + b.over_limit + b.first_self_pay == b.outside_range
    assert b.outside_range + b.policy_range_out_of_pocket == b.out_of_pocket
    assert not (b.large_amount_subsidy and b.critical_illness)  # one second tier per scheme
    for name in FIGURES:
        value = getattr(b, name)
        assert value >= 0 and value == value.quantize(CENT), name
    for name, value in b.accumulators_after.as_dict().items():
        assert value >= 0 and value == value.quantize(CENT), name


@SETTINGS
@given(policies, persons, st.lists(visits, min_size=1, max_size=6))
def test_no_cap_is_exceeded_over_a_year(policy, person, year):
    basic = policy.basic[person.scheme]
    tier = policy.second_tier[person.scheme]
    terms = second_tier_terms(tier, person.assistance)
    for b in run_year(policy, person, year):
        acc = b.accumulators_after
        assert acc.basic_paid <= basic.annual_cap
        assert acc.outpatient_basic_paid <= basic.outpatient_annual_limit
        if terms.cap is not None:
            assert getattr(acc, f"{tier.code}_paid") <= terms.cap
        if person.assistance in policy.assistance:
            assert acc.assistance_paid <= policy.assistance[person.assistance].annual_cap
        else:
            assert acc.assistance_paid == 0
        if b.setting is CareSetting.inpatient:
            assert b.stay_deductible_after <= basic.inpatient_deductible[b.level]


@st.composite
def raised(draw, bill):
    """The bill with one line's quantity or unit price raised."""
    i = draw(st.integers(0, len(bill) - 1))
    line = bill[i]
    if draw(st.booleans()):
        quantity, unit = line.quantity + draw(st.integers(1, 3)), line.unit_price
    else:
        quantity, unit = line.quantity, line.unit_price + draw(money(1, 5_000_000))
    bigger = replace(line, quantity=quantity, unit_price=unit, amount=cents(quantity * unit))
    return bill[:i] + (bigger,) + bill[i + 1:]


@SETTINGS
@given(policies, persons, years, visits, st.data())
def test_raising_an_item_never_lowers_out_of_pocket_or_any_payer(policy, person, year, visit, data):
    acc = accumulators_after(policy, person, year)
    setting, level, bill = visit
    before = settle(policy, SettlementRequest(bill, person, setting, level, acc))
    after = settle(policy, SettlementRequest(data.draw(raised(bill)), person, setting, level, acc))
    for name in ("total", "policy_range", "basic", "large_amount_subsidy", "critical_illness",
                 "assistance", "out_of_pocket"):
        assert getattr(after, name) >= getattr(before, name), name


TILTED = sorted(POLICY.second_tier[Scheme.resident].tilt_categories)


def untilted(policy: PolicyTable) -> PolicyTable:
    """The same table with the 大病 tilt switched off."""
    tiers = {s: replace(t, tilt_categories=frozenset()) for s, t in policy.second_tier.items()}
    return replace(policy, second_tier=tiers)


@SETTINGS
@given(policies, st.sampled_from(TILTED), st.lists(visits, min_size=1, max_size=4))
def test_a_tilted_person_is_never_worse_off_than_untilted(policy, category, year):
    tilted = Person(Scheme.resident, category)
    plain_policy = run_year(untilted(policy), tilted, year)
    no_category = run_year(policy, Person(Scheme.resident), year)
    for t, u, n in zip(run_year(policy, tilted, year), plain_policy, no_category, strict=True):
        assert t.accumulators_after.out_of_pocket <= u.accumulators_after.out_of_pocket
        assert t.accumulators_after.out_of_pocket <= n.accumulators_after.out_of_pocket
        assert t.accumulators_after.critical_illness_paid \
            >= u.accumulators_after.critical_illness_paid


@SETTINGS
@given(policies, persons, st.sampled_from(list(CareSetting)), st.sampled_from([1, 2, 3]),
       st.lists(charge_lines(), min_size=2, max_size=8), st.data())
def test_splitting_one_stays_bill_into_settlements_keeps_the_totals(
        policy, person, setting, level, lines, data):
    """One settlement of the whole bill against interim settlements of its parts
    (the stay's deductible carried over): the year's totals agree within a cent
    per settlement."""
    cuts = sorted(data.draw(st.sets(st.integers(1, len(lines) - 1), max_size=3)))
    parts = [tuple(lines[a:b]) for a, b in zip([0, *cuts], [*cuts, len(lines)], strict=True)]
    whole = settle(policy, SettlementRequest(tuple(lines), person, setting, level))
    acc, stay = Accumulators(), D("0.00")
    for part in parts:
        b = settle(policy, SettlementRequest(part, person, setting, level, acc,
                                             stay if setting is CareSetting.inpatient else D(0)))
        acc, stay = b.accumulators_after, b.stay_deductible_after
    tolerance = CENT * len(parts)
    for name in ("basic_paid", "critical_illness_paid", "large_amount_subsidy_paid",
                 "assistance_paid", "out_of_pocket", "critical_illness_base", "assistance_base"):
        assert abs(getattr(acc, name) - getattr(whole.accumulators_after, name)) <= tolerance, name
    assert acc.out_of_pocket + acc.basic_paid + acc.critical_illness_paid \
        + acc.large_amount_subsidy_paid + acc.assistance_paid == whole.total


@SETTINGS
@given(policies, persons, st.lists(visits, min_size=1, max_size=6))
def test_the_years_annual_payers_depend_only_on_the_years_totals(policy, person, year):
    """However the year's bills are split, 大病 / 大额 and assistance pay exactly what
    their threshold, bands, deductible and cap give on the year's cumulative base."""
    done = run_year(policy, person, year)
    acc = done[-1].accumulators_after
    tier = policy.second_tier[person.scheme]
    terms = second_tier_terms(tier, person.assistance)
    assert getattr(acc, f"{tier.code}_paid") == second_tier_entitlement(
        tier, terms, getattr(acc, f"{tier.code}_base"))
    if person.assistance in policy.assistance:
        assert acc.assistance_paid == assistance_entitlement(
            policy, person.assistance, acc.assistance_base)
    assert getattr(acc, f"{tier.code}_base") == sum(
        (b.policy_range - b.basic for b in done if b.setting in tier.settings), D("0.00"))


@SETTINGS
@given(policies, persons, years, visits)
def test_recomputing_from_stored_inputs_and_policy_version_gives_the_same_breakdown(
        policy, person, year, visit):
    acc = accumulators_after(policy, person, year)
    setting, level, bill = visit
    request = SettlementRequest(bill, person, setting, level, acc)
    original = settle(policy, request)
    stored = json.dumps({"inputs": request_to_json(request), "policy": original.policy_version})
    loaded = json.loads(stored)
    again = settle(policy_by_version(loaded["policy"]), request_from_json(loaded["inputs"]))
    assert again == original


@SETTINGS
@given(policies, persons, years, st.lists(visits, min_size=1, max_size=3))
def test_reversal_restores_the_accumulators_exactly(policy, person, year, later):
    start = accumulators_after(policy, person, year)
    acc, done = start, []
    for setting, level, bill in later:
        b = settle(policy, SettlementRequest(bill, person, setting, level, acc))
        done.append(b)
        acc = b.accumulators_after
    for b in reversed(done):  # latest first, as 冲正 is done
        acc, stay = reverse(acc, b.stay_deductible_after, b)
        assert acc == b.accumulators_before
        assert stay == b.stay_deductible_before
    assert acc == start


@SETTINGS
@given(policies, persons, years, visits, st.data())
def test_a_safety_net_grant_lowers_only_what_the_person_bears(policy, person, year, visit, data):
    acc = accumulators_after(policy, person, year)
    setting, level, bill = visit
    b = settle(policy, SettlementRequest(bill, person, setting, level, acc))
    if b.out_of_pocket == 0:
        return
    amount = data.draw(money(1, int(b.out_of_pocket * 100)))
    grant = grant_safety_net(b, b.accumulators_after, amount)
    after = grant.accumulators_after
    assert after.out_of_pocket == b.accumulators_after.out_of_pocket - amount
    assert after.safety_net_paid == b.accumulators_after.safety_net_paid + amount
    unchanged = [f.name for f in fields(Accumulators)
                 if f.name not in ("out_of_pocket", "safety_net_paid")]
    assert all(getattr(after, n) == getattr(b.accumulators_after, n) for n in unchanged)
    assert revoke_safety_net(after, grant) == b.accumulators_after

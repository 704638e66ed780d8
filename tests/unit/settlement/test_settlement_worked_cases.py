"""Worked settlements, computed by hand from policy/benefits-652300-2024.yaml.

The 2024 table's figures used below (sources in the YAML):
  income (Xinjiang 2023, per capita)       28,947       → 大病 threshold 14,473.50
  resident inpatient deductible / ratio    200 / 450 / 650 yuan, 95 / 85 / 65 % (levels 1/2/3)
  resident outpatient (门诊统筹)            annual deductible 100, 60 / 55 / 50 %, limit 800
  employee inpatient deductible / ratio    500 / 600 / 900 yuan, 93 / 90 / 83 %
  乙类 policy-range share                   90 %
  大病保险 bands                             60 % to 50,000, 65 % to 100,000, 70 % above; cap 300,000
  大病 tilt (低保/特困/返贫致贫)              threshold × 0.5 = 7,236.75, +5 points, no cap
  大额补助 (employees)                       threshold 5,000, 85 % to 200,000, 90 % above
  assistance 低保 / 特困 / 低保边缘           0 / 0 / 10 % of income (2,894.70); 70 / 90 / 60 %; cap 50,000
Rounding: half up to the cent at each payer (payers.py docstring).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal as D

import pytest
from yigongti_settlement.benefits import (
    AssistanceCategory,
    CareSetting,
    ItemCategory,
    Scheme,
    policy_by_version,
    policy_for,
)
from yigongti_settlement.explanation import explain, explain_safety_net
from yigongti_settlement.payers import (
    Accumulators,
    ChargeLine,
    Person,
    SettlementRequest,
    grant_safety_net,
    settle,
)

POLICY = policy_by_version("652300-2024.1")
A, B, OUT = ItemCategory.a, ItemCategory.b, ItemCategory.out_of_catalogue


def line(code: str, category: ItemCategory, amount: str, quantity: int = 1,
         limit: str | None = None) -> ChargeLine:
    unit = D(amount) / quantity
    return ChargeLine(code, category, D(quantity), unit, D(amount),
                      None if limit is None else D(limit))


# --- the seed case ------------------------------------------------------------------------
#
# shared/seeds/000_…: Ms Guo of 木垒县, on 低保, two operations for an acute
# cerebral infarction in 2024: 114,300 yuan of costs (11.43万), 107,600 from
# basic insurance + 大病保险 + assistance (10.76万, so 107,550–107,649), then 2,447
# of 托底 granted by the county insurance office after review; she paid 4,253.
#
# Assumed (the seed gives none of it): a resident, one inpatient stay at a
# level-2 institution (a county 总医院), and this bill. The out-of-catalogue
# line is "assumed: fitted" to the cent so that her share is 6,700.00; nothing
# in the policy table was fitted.
SEED_BILL = (
    line("A-SURGERY", A, "36000.00", quantity=2),  # two operations, 甲类
    line("A-STAY", A, "49146.37"),  # bed, nursing, tests and 甲类 drugs
    line("B-DRUGS", B, "25000.00"),  # 乙类 drugs
    line("B-DEVICE", B, "3800.00", limit="3500.00"),  # a 乙类 device above its price limit
    line("OUT", OUT, "353.63"),  # out of catalogue: assumed: fitted
)
SEED_PERSON = Person(Scheme.resident, AssistanceCategory.low_income)


def test_seed_case_low_income_inpatient_three_payers_then_safety_net():
    """
    total            36,000 + 49,146.37 + 25,000 + 3,800 + 353.63             = 114,300.00
    items            乙 drugs: 25,000 × 0.90 = 22,500.00 in range, 2,500.00 first self-pay
                     device: limit 3,500 × 1 = 3,500 within → 3,150.00 in range,
                             350.00 first self-pay, 300.00 over the limit
                     out of catalogue 353.63 fully self-paid
                     policy range 36,000 + 49,146.37 + 22,500 + 3,150          = 110,796.37
                     outside 353.63 + 300 + 2,850                             =   3,503.63
    basic            level 2: (110,796.37 − 450) × 85 % = 93,794.4145          →  93,794.41
    after basic      110,796.37 − 93,794.41                                   =  17,001.96
    大病 (tilted)     threshold 14,473.50 × 0.5 = 7,236.75
                     (17,001.96 − 7,236.75) × (60 + 5) % = 9,765.21 × 0.65 = 6,347.3865 → 6,347.39
    after 大病        17,001.96 − 6,347.39                                     =  10,654.57
    assistance 低保   no deductible: 10,654.57 × 70 % = 7,458.199               →   7,458.20
    policy-range out-of-pocket 10,654.57 − 7,458.20                           =   3,196.37
    out-of-pocket    3,503.63 + 3,196.37                                      =   6,700.00
    three payers     93,794.41 + 6,347.39 + 7,458.20                          = 107,600.00
    托底 2,447 later  6,700.00 − 2,447.00                                      =   4,253.00
    """
    assert policy_for("652328", date(2024, 8, 20)) is POLICY  # 木垒县 → 昌吉州
    b = settle(POLICY, SettlementRequest(SEED_BILL, SEED_PERSON, CareSetting.inpatient, 2))

    assert b.total == D("114300.00")
    assert (b.policy_range, b.outside_range) == (D("110796.37"), D("3503.63"))
    assert (b.fully_self_paid, b.over_limit, b.first_self_pay) == (
        D("353.63"), D("300.00"), D("2850.00"))
    assert b.deductible == D("450.00")
    assert b.basic == D("93794.41")
    assert b.critical_illness == D("6347.39")
    assert b.large_amount_subsidy == D("0.00")
    assert b.assistance == D("7458.20")
    assert b.policy_range_out_of_pocket == D("3196.37")
    assert b.out_of_pocket == D("6700.00")
    assert b.payers == D("107600.00")
    assert D("107550") <= b.payers <= D("107649")  # the seed's 10.76万
    assert b.policy_version == "652300-2024.1"

    grant = grant_safety_net(b, b.accumulators_after, D("2447.00"))
    assert grant.out_of_pocket_after == D("4253.00")
    assert grant.accumulators_after.out_of_pocket == D("4253.00")
    assert grant.accumulators_after.safety_net_paid == D("2447.00")
    assert b.out_of_pocket == D("6700.00")  # the completed settlement is not changed

    text = explain(b)
    for figure in ("114,300.00元", "3,503.63元", "110,796.37元", "450.00元", "85%",
                   "93,794.41元", "7,236.75元", "6,347.39元", "70%", "7,458.20元",
                   "107,600.00元", "6,700.00元", "低保对象", "不设封顶线", "不设起付线"):
        assert figure in text, figure
    assert "4,253.00元" in explain_safety_net(grant)


def test_seed_case_as_two_stays_after_a_transfer_costs_her_one_more_deductible():
    """The same bill as two stays (木垒县总医院, then the transfer), both level 2,
    the first with the surgery line only:

    stay 1: range 36,000.00; basic (36,000 − 450) × 85 % = 30,217.50; after basic 5,782.50
            大病: year base 5,782.50 < 7,236.75 → 0
            assistance: 5,782.50 × 70 % = 4,047.75; out-of-pocket 1,734.75
    stay 2: range 74,796.37, outside 3,503.63; basic (74,796.37 − 450) × 85 % = 63,194.4145
            → 63,194.41; after basic 11,601.96
            大病: year base 5,782.50 + 11,601.96 = 17,384.46; owed (17,384.46 − 7,236.75) × 65 %
            = 6,596.0115 → 6,596.01, paid before 0 → 6,596.01
            assistance: year base 5,782.50 + (11,601.96 − 6,596.01) = 10,788.45; owed × 70 %
            = 7,551.915 → 7,551.92, less 4,047.75 paid → 3,504.17
            out-of-pocket 3,503.63 + (11,601.96 − 6,596.01 − 3,504.17) = 5,005.41
    year out-of-pocket 1,734.75 + 5,005.41 = 6,740.16: the second deductible (450 × 15 % left
    after basic) costs her 40.16 more than one stay.
    """
    first = settle(POLICY, SettlementRequest(SEED_BILL[:1], SEED_PERSON, CareSetting.inpatient, 2))
    assert (first.basic, first.critical_illness, first.assistance, first.out_of_pocket) == (
        D("30217.50"), D("0.00"), D("4047.75"), D("1734.75"))
    second = settle(POLICY, SettlementRequest(SEED_BILL[1:], SEED_PERSON, CareSetting.inpatient, 2,
                                              first.accumulators_after))
    assert (second.basic, second.critical_illness, second.assistance, second.out_of_pocket) == (
        D("63194.41"), D("6596.01"), D("3504.17"), D("5005.41"))
    assert second.accumulators_after.out_of_pocket == D("6740.16")


# --- other worked cases --------------------------------------------------------------------

R, E = Scheme.resident, Scheme.employee
IN, OUTP = CareSetting.inpatient, CareSetting.outpatient
NONE, LOW, DESTITUTE, NEAR = (AssistanceCategory.none, AssistanceCategory.low_income,
                              AssistanceCategory.extreme_poverty, AssistanceCategory.near_poor)

# id, person, setting, level, lines, accumulators before,
#   expected (policy range, basic, 大病, 大额, assistance, out-of-pocket), working
CASES = [
    ("resident_outpatient_level1_first_visit", Person(R, NONE), OUTP, 1,
     (line("250302001", A, "250.00", quantity=50), line("B-DRUG", B, "50.00")), Accumulators(),
     ("295.00", "117.00", "0.00", "0.00", "0.00", "183.00"),
     "range 250 + 50 × 0.9 = 295; annual deductible 100; (295 − 100) × 60 % = 117.00; "
     "大病 does not cover outpatient care; no assistance category; 300 − 117 = 183.00"),
    ("resident_outpatient_deductible_already_met", Person(R, NONE), OUTP, 2,
     (line("250302001", A, "200.00"),),
     Accumulators(outpatient_deductible_used=D("100.00"), basic_paid=D("117.00"),
                  outpatient_basic_paid=D("117.00")),
     ("200.00", "110.00", "0.00", "0.00", "0.00", "90.00"),
     "deductible met this year; 200 × 55 % = 110.00; 200 − 110 = 90.00"),
    ("resident_outpatient_limit_reached", Person(R, NONE), OUTP, 1,
     (line("250302001", A, "500.00"),),
     Accumulators(outpatient_deductible_used=D("100.00"), basic_paid=D("700.00"),
                  outpatient_basic_paid=D("700.00")),
     ("500.00", "100.00", "0.00", "0.00", "0.00", "400.00"),
     "500 × 60 % = 300, but the outpatient limit 800 leaves 100.00; 500 − 100 = 400.00"),
    ("employee_inpatient_level3_large_amount_subsidy", Person(E, NONE), IN, 3,
     (line("A-STAY", A, "60000.00"),), Accumulators(),
     ("60000.00", "49053.00", "0.00", "5054.95", "0.00", "5892.05"),
     "(60,000 − 900) × 83 % = 49,053.00; after basic 10,947.00; 大额 threshold 5,000: "
     "5,947 × 85 % = 5,054.95; 10,947 − 5,054.95 = 5,892.05"),
    ("destitute_resident_level3_all_bands_no_cap", Person(R, DESTITUTE), IN, 3,
     (line("A-STAY", A, "400000.00"),), Accumulators(),
     ("400000.00", "259577.50", "92389.31", "0.00", "43229.87", "4803.32"),
     "(400,000 − 650) × 65 % = 259,577.50; after basic 140,422.50; tilted threshold 7,236.75, "
     "excess 133,185.75 = 50,000 × 65 % + 50,000 × 70 % + 33,185.75 × 75 % = 32,500 + 35,000 "
     "+ 24,889.3125 → 92,389.31; after 大病 48,033.19; 特困 90 % → 43,229.871 → 43,229.87; "
     "48,033.19 − 43,229.87 = 4,803.32"),
    ("near_poor_assistance_deductible", Person(R, NEAR), IN, 2,
     (line("A-STAY", A, "50000.00"),), Accumulators(),
     ("50000.00", "42117.50", "0.00", "0.00", "2992.68", "4889.82"),
     "(50,000 − 450) × 85 % = 42,117.50; after basic 7,882.50 < 14,473.50 (untilted): no 大病; "
     "assistance deductible 10 % × 28,947 = 2,894.70: (7,882.50 − 2,894.70) × 60 % = 2,992.68; "
     "7,882.50 − 2,992.68 = 4,889.82"),
    ("basic_annual_cap_reached", Person(R, NONE), IN, 1,
     (line("A-STAY", A, "10000.00"),), Accumulators(basic_paid=D("499000.00")),
     ("10000.00", "1000.00", "0.00", "0.00", "0.00", "9000.00"),
     "(10,000 − 200) × 95 % = 9,310 but the cap 500,000 leaves 1,000.00; after basic 9,000 "
     "< 14,473.50: no 大病; 10,000 − 1,000 = 9,000.00"),
    ("low_income_outpatient_assistance_cap_reached", Person(R, LOW), OUTP, 1,
     (line("A-VISIT", A, "1000.00"),),
     Accumulators(outpatient_deductible_used=D("100.00"), assistance_base=D("71285.71"),
                  assistance_paid=D("49900.00")),
     ("1000.00", "600.00", "0.00", "0.00", "100.00", "300.00"),
     "deductible met; 1,000 × 60 % = 600.00; after basic 400; 大病 does not cover outpatient "
     "care; assistance year base 71,285.71 + 400 = 71,685.71 × 70 % = 50,180.00 > cap 50,000; "
     "paid 49,900 (= 71,285.71 × 70 % rounded) → 100.00; 400 − 100 = 300.00"),
]


@pytest.mark.parametrize(("person", "setting", "level", "lines", "before", "expected", "working"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_worked_case(person, setting, level, lines, before, expected, working):
    b = settle(POLICY, SettlementRequest(lines, person, setting, level, before))
    got = (b.policy_range, b.basic, b.critical_illness, b.large_amount_subsidy, b.assistance,
           b.out_of_pocket)
    assert got == tuple(D(x) for x in expected), working
    assert b.payers + b.out_of_pocket == b.total


def test_the_2025_table_moves_the_thresholds_with_the_income():
    """2025 (Xinjiang 2024 income 30,899): 大病 threshold 15,449.50, tilted 7,724.75."""
    policy = policy_for("652300", date(2025, 3, 1))
    assert policy.version == "652300-2025.1"
    b = settle(policy, SettlementRequest(SEED_BILL, SEED_PERSON, IN, 2))
    # after basic 17,001.96 as in 2024; (17,001.96 − 7,724.75) × 65 % = 6,030.1865 → 6,030.19
    assert b.critical_illness == D("6030.19")
    # assistance (17,001.96 − 6,030.19) × 70 % = 7,680.239 → 7,680.24
    assert b.assistance == D("7680.24")


def test_an_untilted_resident_pays_more_than_the_seed_patient():
    """The seed bill for a resident with no assistance category: 大病 threshold 14,473.50,
    (17,001.96 − 14,473.50) × 60 % = 1,517.076 → 1,517.08; no assistance;
    out-of-pocket 3,503.63 + 17,001.96 − 1,517.08 = 18,988.51."""
    person = replace(SEED_PERSON, assistance=NONE)
    b = settle(POLICY, SettlementRequest(SEED_BILL, person, IN, 2))
    assert (b.critical_illness, b.assistance, b.out_of_pocket) == (
        D("1517.08"), D("0.00"), D("18988.51"))


def test_the_explanation_names_each_rule_that_was_applied():
    destitute = settle(POLICY, SettlementRequest((line("A-STAY", A, "400000.00"),),
                                                 Person(R, DESTITUTE), IN, 3))
    text = explain(destitute)
    assert "三级医疗机构住院" in text and "65%" in text
    assert "特困人员，起付线由14,473.50元减半为7,236.75元" in text
    assert "5万元以内65%，5万元至10万元70%，10万元以上75%" in text
    assert "92,389.31元" in text and "救助比例90%" in text and "43,229.87元" in text

    outpatient = settle(POLICY, SettlementRequest((line("250302001", A, "500.00"),),
                                                  Person(R, NONE), OUTP, 1, Accumulators(
                                                      outpatient_deductible_used=D("100.00"),
                                                      basic_paid=D("700.00"),
                                                      outpatient_basic_paid=D("700.00"))))
    text = explain(outpatient)
    assert "门诊统筹" in text and "已达到年度最高支付限额800.00元" in text
    assert "大病保险不支付门诊费用" in text and "您不属于医疗救助对象" in text
    assert "您本次需支付400.00元" in text

    employee = settle(POLICY, SettlementRequest((line("A-STAY", A, "60000.00"),),
                                                Person(E, NONE), IN, 3))
    text = explain(employee)
    assert "职工大额医疗费用补助：年度起付线5,000.00元" in text
    assert "20万元以内85%，20万元以上90%" in text and "5,054.95元" in text

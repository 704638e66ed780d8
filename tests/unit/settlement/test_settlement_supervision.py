"""Fund supervision (智能审核) rules and the return-to-poverty alert threshold."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

import pytest
from yigongti_contracts.common import Sex
from yigongti_settlement.benefits import AssistanceCategory, policy_by_version
from yigongti_settlement.poverty_watch import (
    high_out_of_pocket,
    is_formerly_poor,
    warning_threshold,
)
from yigongti_settlement.supervision import (
    DECEASED,
    DUPLICATE,
    HBA1C,
    READMISSION,
    SEX,
    TWO_INSTITUTIONS,
    CreditLevel,
    Grade,
    Hit,
    ServiceItem,
    SettlementSeen,
    Stage,
    Stay,
    bill_hits,
    deceased_credential,
    duplicate_items,
    hba1c_frequency,
    load_rules,
    readmission,
    refuses,
    review,
    sample_point,
    sex_specific,
    still_in_window,
    two_institutions,
)

HBA1C_CODE = "250302003"
GLUCOSE = "250302001"
PSA = "250404010"
ANTENATAL = "311201001"
D1 = date(2025, 3, 1)


def item(code: str, day: date, quantity: int = 1) -> ServiceItem:
    return ServiceItem(code, day, quantity)


# --- deceased person's credential ---------------------------------------------------------------


@pytest.mark.parametrize(("died_on", "presented_on", "service_day", "hit"), [
    (None, D1, D1, False),
    (date(2025, 2, 27), D1, D1, True),  # presented two days after death
    (D1, D1, D1, False),  # an in-hospital death settled the same day
    (date(2025, 2, 27), date(2025, 2, 27), D1, True),  # a service dated after death
    (date(2025, 3, 5), D1, D1, False),
])
def test_a_deceased_persons_credential_is_a_definite_hit_that_refuses(
        died_on, presented_on, service_day, hit):
    got = deceased_credential(died_on, presented_on, [item(GLUCOSE, service_day)])
    assert (got is not None) == hit
    if hit:
        assert (got.rule_id, got.grade, got.stage) == (DECEASED, Grade.definite, Stage.before)
        assert got.facts()["died_on"] == died_on.isoformat()
        assert refuses([got])


def test_the_service_after_death_is_in_the_evidence():
    got = deceased_credential(date(2025, 2, 27), date(2025, 2, 27),
                              [item(GLUCOSE, D1), item(GLUCOSE, date(2025, 2, 28))])
    assert got.facts()["first_service_after_death"] == "2025-02-28"
    assert got.facts()["services_after_death"] == "2"


# --- same item twice on one day -----------------------------------------------------------------


def test_the_same_test_twice_on_one_day_is_flagged():
    hits = duplicate_items([item(GLUCOSE, D1), item(GLUCOSE, D1), item(HBA1C_CODE, D1)])
    assert [(h.rule_id, h.grade, h.facts()["item_code"], h.facts()["count"]) for h in hits] == [
        (DUPLICATE, Grade.suspicious, GLUCOSE, "2")]


def test_quantity_two_on_one_line_counts_as_twice():
    assert len(duplicate_items([item(GLUCOSE, D1, quantity=2)])) == 1


def test_an_item_already_settled_that_day_counts_but_history_alone_does_not():
    hits = duplicate_items([item(GLUCOSE, D1)], history=[item(GLUCOSE, D1)])
    assert hits[0].facts()["already_settled"] == "1"
    assert duplicate_items([item(HBA1C_CODE, D1)],
                           history=[item(GLUCOSE, D1), item(GLUCOSE, D1)]) == []


def test_different_days_and_daily_items_like_drugs_are_not_duplicates():
    assert duplicate_items([item(GLUCOSE, D1), item(GLUCOSE, D1 + timedelta(days=1))]) == []
    assert duplicate_items([item("X00000001", D1), item("X00000001", D1)]) == []  # not a 2xxx item


# --- HbA1c once in 90 days ------------------------------------------------------------------------


@pytest.mark.parametrize(("gap", "flagged"), [(0, True), (30, True), (89, True), (90, False),
                                               (200, False)])
def test_hba1c_within_90_days_of_the_previous_one_is_flagged(gap, flagged):
    hits = hba1c_frequency([item(HBA1C_CODE, D1 + timedelta(days=gap))],
                           history=[item(HBA1C_CODE, D1)])
    assert bool(hits) == flagged
    if flagged:
        assert hits[0].facts() == {"item_code": HBA1C_CODE,
                                   "service_date": (D1 + timedelta(days=gap)).isoformat(),
                                   "previous_date": D1.isoformat(), "days_between": str(gap),
                                   "window_days": "90"}
        assert (hits[0].rule_id, hits[0].grade) == (HBA1C, Grade.suspicious)


def test_hba1c_twice_on_one_bill_flags_the_later_and_history_alone_is_not_flagged():
    hits = hba1c_frequency([item(HBA1C_CODE, D1), item(HBA1C_CODE, D1 + timedelta(days=10))])
    assert [h.facts()["service_date"] for h in hits] == ["2025-03-11"]
    assert hba1c_frequency([item(GLUCOSE, D1)],
                           history=[item(HBA1C_CODE, D1), item(HBA1C_CODE, D1)]) == []


def test_the_hba1c_window_is_data():
    spec = replace(load_rules()[HBA1C], params={**load_rules()[HBA1C].params, "window_days": 30})
    assert hba1c_frequency([item(HBA1C_CODE, D1 + timedelta(days=45))],
                           history=[item(HBA1C_CODE, D1)], spec=spec) == []


# --- sex-specific items -------------------------------------------------------------------------


@pytest.mark.parametrize(("sex", "code", "flagged"), [
    (Sex.female, PSA, True), (Sex.male, PSA, False),
    (Sex.male, ANTENATAL, True), (Sex.female, ANTENATAL, False),
    (Sex.unknown, PSA, False), (Sex.male, GLUCOSE, False),
])
def test_a_sex_specific_item_on_the_other_sex_is_flagged(sex, code, flagged):
    hits = sex_specific(sex, [item(code, D1)])
    assert bool(hits) == flagged
    if flagged:
        assert (hits[0].rule_id, hits[0].grade) == (SEX, Grade.definite)
        assert hits[0].facts()["patient_sex"] == sex.value


# --- readmission within 15 days -----------------------------------------------------------------


def stay(stay_id: str, admitted: date, discharged: date | None = None, institution="652328001",
         planned=False) -> Stay:
    return Stay(stay_id, institution, admitted, discharged, planned)


@pytest.mark.parametrize(("gap", "flagged"), [(0, True), (1, True), (15, True), (16, False)])
def test_readmission_within_15_days_of_a_discharge_is_flagged(gap, flagged):
    earlier = [stay("S1", date(2025, 2, 1), D1)]
    hits = readmission(stay("S2", D1 + timedelta(days=gap)), earlier)
    assert bool(hits) == flagged
    if flagged:
        assert hits[0].facts()["days_between"] == str(gap)
        assert (hits[0].rule_id, hits[0].stage) == (READMISSION, Stage.after)


def test_readmission_counts_other_institutions_but_not_planned_cycles_or_the_same_stay():
    earlier = [stay("S1", date(2025, 2, 1), D1, institution="652301001")]
    assert readmission(stay("S2", D1 + timedelta(days=3)), earlier)[0].facts()[
        "previous_institution"] == "652301001"
    assert readmission(stay("S2", D1 + timedelta(days=3), planned=True), earlier) == []
    assert readmission(stay("S1", date(2025, 2, 1)), earlier) == []
    assert readmission(stay("S2", D1), [stay("S1", date(2025, 2, 20))]) == []  # not discharged


# --- the stream rule: two institutions within minutes ---------------------------------------------

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def seen(sid: str, institution: str, minutes: int) -> SettlementSeen:
    return SettlementSeen(sid, institution, T0 + timedelta(minutes=minutes))


@pytest.mark.parametrize(("minutes", "institution", "flagged"), [
    (10, "652301001", True), (30, "652301001", True), (31, "652301001", False),
    (5, "652328001", False),  # the same institution (a second window at one counter)
    (-20, "652301001", True),  # arriving out of order on the stream
])
def test_settling_at_two_institutions_within_the_window_is_flagged(minutes, institution, flagged):
    hits = two_institutions(seen("B", institution, minutes), [seen("A", "652328001", 0)])
    assert bool(hits) == flagged
    if flagged:
        assert hits[0].rule_id == TWO_INSTITUTIONS
        assert hits[0].facts()["other_settlement"] == "A"
        assert hits[0].facts()["minutes_between"] == str(abs(minutes))


def test_the_stream_window_is_data_and_old_settlements_are_dropped():
    spec = replace(load_rules()[TWO_INSTITUTIONS], params={"window_minutes": 60})
    assert two_institutions(seen("B", "X", 45), [seen("A", "Y", 0)], spec=spec)
    kept = still_in_window([seen("A", "Y", 0), seen("B", "Y", 20)], T0 + timedelta(minutes=40))
    assert [s.settlement_id for s in kept] == ["B"]


# --- pre-check, refusal, credit level ---------------------------------------------------------------


def test_the_pre_check_lists_every_rule_the_bill_trips():
    bill = [item(HBA1C_CODE, D1), item(HBA1C_CODE, D1), item(PSA, D1)]
    hits = bill_hits(bill, sex=Sex.female, died_on=None, presented_on=D1)
    assert sorted({h.rule_id for h in hits}) == sorted({DUPLICATE, HBA1C, SEX})
    assert not refuses(hits)  # suspicious and definite during settlement: flagged, not refused
    dead = bill_hits(bill, sex=Sex.female, died_on=date(2025, 1, 1), presented_on=D1)
    assert refuses(dead)


def _hit(grade: Grade) -> Hit:
    return Hit("r", grade, Stage.during, ())


@pytest.mark.parametrize(("level", "hits", "point", "to_review"), [
    (CreditLevel.red, [], D("0"), False),
    (CreditLevel.red, [_hit(Grade.suspicious)], D("0"), False),
    (CreditLevel.red, [_hit(Grade.definite)], D("0.5"), True),
    (CreditLevel.grey, [_hit(Grade.suspicious)], D("0.5"), True),
    (CreditLevel.grey, [], D("0.05"), True),  # sampled: one in ten
    (CreditLevel.grey, [], D("0.5"), False),
    (CreditLevel.black, [], D("0.99"), True),  # every settlement
])
def test_the_institutions_credit_level_sets_what_goes_to_review(level, hits, point, to_review):
    assert review(level, hits, point).to_review is to_review


def test_sample_points_are_deterministic_and_spread():
    points = [sample_point(f"OBN-{i}") for i in range(2000)]
    assert points[0] == sample_point("OBN-0")
    assert all(0 <= p < 1 for p in points)
    assert 150 <= sum(p < D("0.10") for p in points) <= 250


# --- return-to-poverty alert threshold ------------------------------------------------------------

POLICY = policy_by_version("652300-2024.1")


def test_the_warning_threshold_is_half_the_rural_income_for_the_formerly_poor():
    assert warning_threshold(POLICY, formerly_poor=True) == D("8974.00")  # 50 % × 17,948
    assert warning_threshold(POLICY, formerly_poor=False) == D("17948.00")
    assert is_formerly_poor(POLICY, AssistanceCategory.returned_to_poverty)
    assert not is_formerly_poor(POLICY, AssistanceCategory.low_income)
    assert is_formerly_poor(POLICY, AssistanceCategory.none, marked_formerly_poor=True)


@pytest.mark.parametrize(("formerly_poor", "before", "after", "alert"), [
    (True, "8000.00", "8973.99", False),
    (True, "8000.00", "8974.00", True),  # reaching the threshold counts
    (True, "8974.00", "9500.00", False),  # already above: alerted once before
    (False, "8000.00", "9000.00", False),
    (False, "17000.00", "18000.00", True),
    (False, "18000.00", "15000.00", False),  # a safety-net grant or reversal going down
])
def test_the_alert_fires_once_when_the_years_out_of_pocket_crosses_the_threshold(
        formerly_poor, before, after, alert):
    got = high_out_of_pocket(POLICY, formerly_poor, D(before), D(after))
    assert (got is not None) == alert
    if alert:
        assert got.out_of_pocket == D(after)
        assert got.policy_version == POLICY.version

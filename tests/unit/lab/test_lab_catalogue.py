"""The catalogue's pure look-ups: ranges, flags, critical limits, delta checks,
recognition windows, prices and analyser codes (policy/catalogue.yaml, prices.yaml)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yigongti_contracts.common import Age, AgeUnit, Sex
from yigongti_contracts.lab.codes import CriticalDirection, Flag, PolicyCategory, TubeType
from yigongti_lab.catalogue import (
    CatalogueTest,
    Discipline,
    PriceNotFound,
    UnitMismatch,
    UnknownTest,
    by_analyser_code,
    critical,
    critical_coded,
    delta_check,
    flag,
    flag_coded,
    load_catalogue,
    lookup,
    price,
    price_item,
    price_table,
    recognition_window,
    reference_range,
    reported_codes,
)

D = Decimal
LOW, HIGH = CriticalDirection.low, CriticalDirection.high


def years(n: int) -> Age:
    return Age(value=n, unit=AgeUnit.years)


def days(n: int) -> Age:
    return Age(value=n, unit=AgeUnit.days)


# --- the first catalogue's interface still holds ---------------------------------


def test_load_catalogue_keeps_the_first_slice_fields():
    catalogue = load_catalogue()
    for code in ("K", "NA", "CL", "GLU", "CTNI", "CBC", "HGB", "PT", "HBA1C"):
        entry = catalogue[code]
        assert isinstance(entry, CatalogueTest)
        assert entry.code == code and isinstance(entry.tube, TubeType)
    assert catalogue["K"].loinc == "2823-3" and catalogue["K"].unit == "mmol/L"
    assert catalogue["K"].tube is TubeType.serum_gold
    assert catalogue["CBC"].unit is None and catalogue["CBC"].tube is TubeType.edta_k2
    assert catalogue["GLU"].tube is TubeType.fluoride_oxalate


def test_the_menu_has_the_county_basics():
    assert {"WBC", "PLT", "CREA", "UREA", "ALT", "AST", "TBIL", "CKMB", "DDIMER", "APTT",
            "INR", "TG", "CHOL", "CRP", "LAC", "NH3", "PH", "PCO2", "PO2"} <= set(load_catalogue())
    assert 25 <= len(load_catalogue()) <= 40


def test_unknown_test_raises():
    with pytest.raises(UnknownTest):
        lookup("NOPE")
    with pytest.raises(KeyError):
        reference_range("NOPE", Sex.male, 40)


# --- reference ranges by sex and age ----------------------------------------------


@pytest.mark.parametrize(("test", "sex", "age", "expected"), [
    ("K", Sex.male, years(40), ("3.5", "5.3")),
    ("K", Sex.unknown, years(40), ("3.5", "5.3")),
    ("K", Sex.female, years(5), ("3.5", "5.3")),            # child: adult band (assumed)
    ("K", Sex.female, days(200), None),                      # under 1 year: no band
    ("NA", Sex.female, years(30), ("137", "147")),
    ("HGB", Sex.male, years(18), ("130", "175")),            # band starts at 18
    ("HGB", Sex.female, years(18), ("115", "150")),
    ("HGB", Sex.male, years(17), ("129", "172")),            # 13–<18, by sex
    ("HGB", Sex.female, years(13), ("114", "154")),
    ("HGB", Sex.male, years(12), ("118", "156")),            # 6–<13, any sex
    ("HGB", Sex.unknown, years(17), None),                   # bands by sex only
    ("HGB", Sex.male, days(27), None),                       # neonate before 28 d
    ("HGB", Sex.male, days(28), ("97", "183")),
    ("HGB", Sex.male, days(181), ("97", "183")),
    ("HGB", Sex.male, days(182), ("97", "141")),
    ("HGB", Sex.male, days(364), ("97", "141")),
    ("HGB", Sex.male, years(1), ("107", "141")),             # 1 year = 365 days
    ("WBC", Sex.female, years(70), ("3.5", "9.5")),
    ("PLT", Sex.male, years(12), ("150", "407")),
    ("CREA", Sex.male, years(59), ("57", "97")),
    ("CREA", Sex.male, years(60), ("57", "111")),
    ("CREA", Sex.female, years(45), ("41", "73")),
    ("CREA", Sex.female, years(85), ("41", "81")),
    ("CREA", Sex.male, years(10), None),                     # no paediatric band
    ("UREA", Sex.female, years(61), ("3.1", "8.8")),
    ("ALT", Sex.male, years(30), ("9", "50")),
    ("ALT", Sex.female, years(30), ("7", "40")),
    ("TBIL", Sex.male, years(30), (None, "26.0")),           # one-sided
    ("ALB", Sex.unknown, years(60), ("38", "54")),
    ("CTNI", Sex.female, years(50), (None, "26.2")),
    ("CBC", Sex.male, years(40), None),                      # a panel has no range
])
def test_reference_range_by_sex_and_age(test, sex, age, expected):
    got = reference_range(test, sex, age)
    if expected is None:
        assert got is None
    else:
        assert got == tuple(None if v is None else D(v) for v in expected)


def test_reference_range_takes_completed_years_as_int():
    assert reference_range("CREA", Sex.male, 60) == (D("57"), D("111"))


# --- flags ----------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "range_", "expected"), [
    ("3.49", ("3.5", "5.3"), Flag.L),
    ("3.5", ("3.5", "5.3"), Flag.N),
    ("5.3", ("3.5", "5.3"), Flag.N),
    ("5.31", ("3.5", "5.3"), Flag.H),
    ("0", (None, "26.2"), Flag.N),
    ("26.3", (None, "26.2"), Flag.H),
    ("-1", (None, "26.2"), Flag.N),
    ("0.9", ("1", None), Flag.L),
])
def test_flag_against_range(value, range_, expected):
    low, high = (None if v is None else D(v) for v in range_)
    assert flag(D(value), (low, high)) is expected


def test_flag_without_range_is_normal():
    assert flag(D("99"), None) is Flag.N


def test_coded_flags():
    assert flag_coded("BCULT", "NEG") is Flag.N
    assert flag_coded("BCULT", "POS") is Flag.A


@given(st.decimals(min_value=-1000, max_value=1000, allow_nan=False, places=2))
def test_flag_is_h_or_l_exactly_outside(value):
    rng = (D("3.5"), D("5.3"))
    got = flag(value, rng)
    assert (got is Flag.L) == (value < rng[0])
    assert (got is Flag.H) == (value > rng[1])


# --- critical values ----------------------------------------------------------------


@pytest.mark.parametrize(("test", "value", "unit", "expected"), [
    ("K", "2.79", "mmol/L", LOW),
    ("K", "2.8", "mmol/L", None),
    ("K", "2.81", "mmol/L", None),
    ("K", "6.2", "mmol/L", None),
    ("K", "6.21", "mmol/L", HIGH),
    ("GLU", "2.79", "mmol/L", LOW),
    ("GLU", "2.8", "mmol/L", None),
    ("GLU", "22.2", "mmol/L", None),
    ("GLU", "22.21", "mmol/L", HIGH),
    ("NA", "119.9", "mmol/L", LOW),
    ("NA", "160", "mmol/L", None),
    ("NA", "160.1", "mmol/L", HIGH),
    ("CTNI", "26.3", "ng/L", None),              # above the 99th percentile: H, not critical
    ("CTNI", "299.9", "ng/L", None),
    ("CTNI", "300", "ng/L", HIGH),               # ≥ 300 (inclusive)
    ("CTNI", "0", "ng/L", None),                 # one-sided: no low limit
    ("CA", "3.39", "mmol/L", None),
    ("CA", "3.4", "mmol/L", HIGH),               # ≥ 3.4 (inclusive)
    ("CA", "1.75", "mmol/L", None),
    ("CA", "1.74", "mmol/L", LOW),
    ("WBC", "2.0", "10*9/L", LOW),               # ≤ 2.0 (inclusive)
    ("WBC", "2.01", "10*9/L", None),
    ("WBC", "29.9", "10*9/L", None),
    ("WBC", "30.0", "10*9/L", HIGH),             # ≥ 30 (inclusive)
    ("PLT", "29", "10*9/L", LOW),
    ("PLT", "30", "10*9/L", None),
    ("LAC", "3.99", "mmol/L", None),
    ("LAC", "4", "mmol/L", HIGH),
    ("PH", "7.19", "[pH]", LOW),
    ("PH", "7.61", "[pH]", HIGH),
    ("PO2", "44", "mm[Hg]", LOW),
    ("INR", "3.6", "{INR}", HIGH),
    ("ALT", "5000", "U/L", None),                # no critical limits
])
def test_critical_at_and_around_limits(test, value, unit, expected):
    assert critical(test, D(value), unit) == expected


@pytest.mark.parametrize(("test", "value", "unit"), [
    ("K", "2.0", "mg/dL"),
    ("K", "7.0", "mmol/l"),         # spelling differs: convert or normalise first
    ("GLU", "400", "mg/dL"),
    ("CTNI", "2.35", "ng/mL"),      # the contract example's unit: not silently ×1000
])
def test_critical_refuses_a_unit_it_has_no_limit_for(test, value, unit):
    with pytest.raises(UnitMismatch):
        critical(test, D(value), unit)


def test_coded_critical():
    assert critical_coded("BCULT", "POS") is CriticalDirection.abnormal
    assert critical_coded("BCULT", "NEG") is None
    assert critical_coded("K", "POS") is None


# --- delta checks ---------------------------------------------------------------------

H = timedelta(hours=1)


@pytest.mark.parametrize(("test", "value", "previous", "elapsed", "failed"), [
    ("K", "5.0", "4.0", 24 * H, False),          # change 1.0 = limit
    ("K", "5.01", "4.0", 24 * H, True),
    ("K", "3.0", "4.01", 24 * H, True),          # either direction
    ("K", "6.0", "4.0", 48 * H, True),           # window end included
    ("K", "6.0", "4.0", 48 * H + timedelta(seconds=1), False),
    ("K", "6.0", "4.0", timedelta(0), True),
    ("HGB", "100", "120", 12 * H, False),
    ("HGB", "99", "120", 12 * H, True),
    ("PLT", "150", "100", 12 * H, False),        # +50 %
    ("PLT", "151", "100", 12 * H, True),
    ("PLT", "49", "100", 12 * H, True),
    ("PLT", "1", "0", 12 * H, True),             # percent from zero
    ("PLT", "0", "0", 12 * H, False),
    ("CREA", "126.5", "100", 24 * H, False),     # 26.5 umol/L (KDIGO)
    ("CREA", "126.6", "100", 24 * H, True),
    ("GLU", "20", "5", 1 * H, False),            # no delta limit
])
def test_delta_check(test, value, previous, elapsed, failed):
    assert delta_check(test, D(value), D(previous), elapsed) is failed


def test_delta_check_refuses_negative_elapsed():
    with pytest.raises(ValueError):
        delta_check("K", D("4"), D("4"), timedelta(minutes=-1))


# --- mutual recognition ---------------------------------------------------------------


@pytest.mark.parametrize(("test", "window"), [
    ("K", timedelta(days=7)),
    ("CBC", timedelta(days=3)),
    ("WBC", timedelta(days=3)),
    ("HBA1C", timedelta(days=90)),
    ("TG", timedelta(days=30)),
    ("CTNI", None),
    ("PH", None),
    ("BCULT", None),
])
def test_recognition_window(test, window):
    assert recognition_window(test) == window


# --- prices ---------------------------------------------------------------------------------


def test_price_item_and_price():
    item = price_item("K")
    assert item is not None and item.policy_category is PolicyCategory.a
    assert price(item.item, "652300", 2025) == D("6.00")
    cbc = price_item("CBC")
    assert cbc is not None and price(cbc.item, "652300", 2025) == D("20.00")


def test_a_panel_line_has_no_price_of_its_own():
    assert price_item("WBC") is None and price_item("INR") is None and price_item("PH") is None


def test_a_county_uses_its_prefectures_table():
    assert price_table("652325", 2025).id == "XJ-652300-2025-LAB"
    assert price("250304001", "652325", 2025) == D("6.00")


@pytest.mark.parametrize(("item", "region", "year"), [
    ("250304001", "652300", 2019),      # no table for the year
    ("250304001", "110000", 2025),      # no table for the region
    ("999999999", "652300", 2025),      # not in the table
])
def test_price_not_found(item, region, year):
    with pytest.raises(PriceNotFound):
        price(item, region, year)


def test_prices_are_decimals_with_two_places():
    for p in price_table("652300", 2025).prices.values():
        assert isinstance(p, Decimal) and p.as_tuple().exponent == -2


# --- analyser codes and panels ---------------------------------------------------------


@pytest.mark.parametrize(("code", "expected"), [
    ("2823-3", "K"),          # LOINC
    ("K", "K"),               # local code
    ("hsTnI", "CTNI"),
    ("89579-7", "CTNI"),
    ("2345-7", "GLU"),        # the mass-glucose LOINC still maps
    ("14749-6", "GLU"),
    ("pCO2", "PCO2"),
    ("PCO2", "PCO2"),         # catalogue code, any case
    ("na", "NA"),
    (" 718-7 ", "HGB"),
    ("XYZ", None),
])
def test_by_analyser_code(code, expected):
    got = by_analyser_code(code)
    assert (got.code if got else None) == expected


def test_reported_codes():
    assert reported_codes("CBC") == ("WBC", "HGB", "PLT")
    assert reported_codes("PT") == ("PT", "INR")
    assert reported_codes("BG") == ("PH", "PCO2", "PO2")
    assert reported_codes("K") == ("K",)


def test_disciplines():
    catalogue = load_catalogue()
    assert catalogue["K"].discipline is Discipline.chemistry
    assert catalogue["CBC"].discipline is Discipline.haematology
    assert catalogue["APTT"].discipline is Discipline.coagulation
    assert catalogue["CTNI"].discipline is Discipline.immunoassay
    assert catalogue["PH"].discipline is Discipline.blood_gas

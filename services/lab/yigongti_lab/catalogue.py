"""The test catalogue (data in policy/catalogue.yaml, prices in policy/prices.yaml):
what the lab can do, and the pure look-ups over it.

Everything here reads the packaged YAML once (cached) and does no other I/O.
Numbers travel as Decimal; a test is named by its catalogue code ("K") or given
as its `CatalogueTest`.

- `reference_range(test, sex, age)` → (low, high), either side None when the
  interval is one-sided; None when no band covers the patient.
- `flag(value, range)` → H / L / N (a value on a limit is N).
- `critical(test, value, unit)` → low / high or None; the limits are keyed by
  unit and a unit the test has no limit for raises `UnitMismatch` — values in
  different units are never compared.
- `delta_check(test, value, previous, elapsed)` → True when the change exceeds
  the test's delta limit within its window (`Observation.delta_check_failed`).
- `recognition_window(test)`, `price_item(test)`, `price(item, region, year)`,
  `by_analyser_code(code)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from functools import cache
from importlib.resources import files
from typing import Any

import yaml
from yigongti_contracts.common import Age, AgeUnit, Sex
from yigongti_contracts.lab.codes import CriticalDirection, Flag, PolicyCategory, TubeType

DAYS_PER_YEAR = 365  # ages are completed years, bands are compared in days

Range = tuple[Decimal | None, Decimal | None]
"""A reference interval (low, high); None on a side means no limit there."""


class Discipline(StrEnum):
    """The lab section a test runs in; turnaround targets are per discipline."""

    chemistry = "chemistry"
    haematology = "haematology"
    coagulation = "coagulation"
    immunoassay = "immunoassay"
    blood_gas = "blood_gas"
    microbiology = "microbiology"


class DeltaKind(StrEnum):
    absolute = "absolute"  # |value − previous| in the test's unit
    percent = "percent"  # |value − previous| / |previous| × 100


class UnknownTest(KeyError):
    """No catalogue test has this code."""


class UnitMismatch(ValueError):
    """A value's unit is not one the test's limits are given in."""


class PriceNotFound(LookupError):
    """No price table for the region and year, or no such item in it."""


@dataclass(frozen=True)
class RangeBand:
    """One reference interval: for `sex` (None: any) and ages [from, to) in days."""

    sex: Sex | None
    age_from_days: int
    age_to_days: int | None
    low: Decimal | None
    high: Decimal | None

    def covers(self, age_days: int) -> bool:
        return self.age_from_days <= age_days and (
            self.age_to_days is None or age_days < self.age_to_days)


@dataclass(frozen=True)
class CriticalLimit:
    """Critical when value < low or > high (<= / >= when inclusive), in `unit`."""

    unit: str
    low: Decimal | None
    high: Decimal | None
    low_inclusive: bool = False
    high_inclusive: bool = False

    def direction(self, value: Decimal) -> CriticalDirection | None:
        if self.low is not None and (value < self.low or (self.low_inclusive and value == self.low)):
            return CriticalDirection.low
        if self.high is not None and (
                value > self.high or (self.high_inclusive and value == self.high)):
            return CriticalDirection.high
        return None


@dataclass(frozen=True)
class DeltaLimit:
    kind: DeltaKind
    limit: Decimal
    window: timedelta


@dataclass(frozen=True)
class PriceItem:
    """The charge item of a test in the regional price table, with its insurance
    category (甲 a / 乙 b / 丙 c)."""

    item: str
    policy_category: PolicyCategory


@dataclass(frozen=True)
class PriceTable:
    id: str
    region: str
    year: int
    currency: str
    source: str
    prices: Mapping[str, Decimal]


@dataclass(frozen=True)
class CatalogueTest:
    code: str
    loinc: str | None
    tube: TubeType
    unit: str | None
    name_zh: str = ""
    discipline: Discipline = Discipline.chemistry
    orderable: bool = True
    reports: tuple[str, ...] = ()
    analyser_codes: tuple[str, ...] = ()
    reference_ranges: tuple[RangeBand, ...] = ()
    critical: tuple[CriticalLimit, ...] = ()
    critical_coded: frozenset[str] = frozenset()
    normal_coded: frozenset[str] = frozenset()
    delta: DeltaLimit | None = None
    recognition_window: timedelta | None = None
    price: PriceItem | None = None


# --- loading -----------------------------------------------------------------


def _policy(name: str) -> Any:
    return yaml.safe_load((files("yigongti_lab") / "policy" / name).read_text("utf-8"))


def decimal_of(raw: Any) -> Decimal:
    """A YAML number written as a string ("2.8") or an integer; floats are refused
    (a binary float would not be the value the source gives)."""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ValueError(f"write {raw!r} as a quoted decimal string")
    return Decimal(str(raw))


def _optional_decimal(raw: Any) -> Decimal | None:
    return None if raw is None else decimal_of(raw)


def age_in_days(text: str) -> int:
    """A band boundary: "28d" or "18y" (years count 365 days)."""
    number, unit = text[:-1], text[-1]
    if unit not in "dy" or not number.isdigit():
        raise ValueError(f"age {text!r}: write <n>d or <n>y")
    return int(number) * (DAYS_PER_YEAR if unit == "y" else 1)


def _band(raw: Mapping[str, Any]) -> RangeBand:
    sex = None if raw["sex"] == "any" else Sex(raw["sex"])
    to = raw.get("age_to")
    return RangeBand(sex, age_in_days(raw["age_from"]), None if to is None else age_in_days(to),
                     _optional_decimal(raw.get("low")), _optional_decimal(raw.get("high")))


def _critical(raw: Mapping[str, Any]) -> CriticalLimit:
    return CriticalLimit(raw["unit"], _optional_decimal(raw.get("low")),
                         _optional_decimal(raw.get("high")),
                         bool(raw.get("low_inclusive", False)),
                         bool(raw.get("high_inclusive", False)))


def _test(raw: Mapping[str, Any]) -> CatalogueTest:
    delta = raw.get("delta")
    price = raw.get("price")
    window = raw.get("recognition_window_days")
    return CatalogueTest(
        code=raw["code"],
        loinc=raw.get("loinc"),
        tube=TubeType(raw["tube"]),
        unit=raw.get("unit"),
        name_zh=raw.get("name_zh", ""),
        discipline=Discipline(raw.get("discipline", Discipline.chemistry)),
        orderable=bool(raw.get("orderable", True)),
        reports=tuple(raw.get("reports") or ()),
        analyser_codes=tuple(str(c) for c in raw.get("analyser_codes") or ()),
        reference_ranges=tuple(_band(b) for b in raw.get("reference_ranges") or ()),
        critical=tuple(_critical(c) for c in raw.get("critical") or ()),
        critical_coded=frozenset(raw.get("critical_coded") or ()),
        normal_coded=frozenset(raw.get("normal_coded") or ()),
        delta=None if delta is None else DeltaLimit(
            DeltaKind(delta["kind"]), decimal_of(delta["limit"]),
            timedelta(hours=delta["window_hours"])),
        recognition_window=(timedelta(days=window)
                            if raw.get("recognised") and window is not None else None),
        price=None if price is None else PriceItem(
            str(price["item"]), PolicyCategory(price["policy_category"])),
    )


@cache
def load_catalogue() -> dict[str, CatalogueTest]:
    return {t["code"]: _test(t) for t in _policy("catalogue.yaml")["tests"]}


@cache
def _by_identifier() -> dict[str, str]:
    """Analyser codes, LOINC codes and catalogue codes → catalogue code."""
    index: dict[str, str] = {}
    for test in load_catalogue().values():
        for key in (*test.analyser_codes, test.loinc):
            if key:
                index.setdefault(key, test.code)
    return index


@cache
def load_price_tables() -> tuple[PriceTable, ...]:
    return tuple(
        PriceTable(
            id=t["id"], region=str(t["region"]), year=int(t["year"]),
            currency=t["currency"], source=t["source"],
            prices={str(code): decimal_of(item["price"]) for code, item in t["items"].items()},
        )
        for t in _policy("prices.yaml")["tables"]
    )


# --- look-ups ----------------------------------------------------------------

TestRef = str | CatalogueTest


def lookup(test: TestRef) -> CatalogueTest:
    """The catalogue entry of a code (or the entry itself)."""
    if isinstance(test, CatalogueTest):
        return test
    try:
        return load_catalogue()[test]
    except KeyError:
        raise UnknownTest(test) from None


def by_analyser_code(code: str) -> CatalogueTest | None:
    """The test an analyser's OBX-3 identifier names: one of its analyser codes or
    its LOINC code (exact), else its catalogue code (letter case ignored)."""
    code = code.strip()
    catalogue = load_catalogue()
    hit = _by_identifier().get(code)
    if hit is not None:
        return catalogue[hit]
    for test in catalogue.values():
        if test.code.upper() == code.upper():
            return test
    return None


def reported_codes(test: TestRef) -> tuple[str, ...]:
    """The result lines an order for the test produces (a panel's lines)."""
    entry = lookup(test)
    return entry.reports or (entry.code,)


def _age_days(age: Age | int) -> int:
    if isinstance(age, int):
        return age * DAYS_PER_YEAR
    return age.value * (DAYS_PER_YEAR if age.unit is AgeUnit.years else 1)


def reference_range(test: TestRef, sex: Sex, age: Age | int) -> Range | None:
    """The reference interval for a patient (age as `Age`, or completed years):
    a band for the patient's sex first, then one for any sex; None when no band
    covers the age (or the sex is unknown and the bands are by sex)."""
    age_days = _age_days(age)
    bands = [b for b in lookup(test).reference_ranges if b.covers(age_days)]
    for wanted in ((sex,) if sex is not Sex.unknown else ()) + (None,):
        for band in bands:
            if band.sex == wanted:
                return band.low, band.high
    return None


def flag(value: Decimal, range_: Range | None) -> Flag:
    """H above the interval, L below, N inside or on a limit (and when there is no
    interval to compare with)."""
    if range_ is None:
        return Flag.N
    low, high = range_
    if low is not None and value < low:
        return Flag.L
    if high is not None and value > high:
        return Flag.H
    return Flag.N


def flag_coded(test: TestRef, coded_value: str) -> Flag:
    """N for a coded result the test lists as normal, else A."""
    return Flag.N if coded_value in lookup(test).normal_coded else Flag.A


def critical(test: TestRef, value: Decimal, unit: str) -> CriticalDirection | None:
    """The critical direction of a numeric result, None when not critical.

    Limits are keyed by unit; a test with limits but none in `unit` raises
    `UnitMismatch` (convert first: nothing is compared across units)."""
    entry = lookup(test)
    if not entry.critical:
        return None
    for limit in entry.critical:
        if limit.unit == unit:
            return limit.direction(value)
    units = ", ".join(limit.unit for limit in entry.critical)
    raise UnitMismatch(f"{entry.code}: critical limits are in {units}, not {unit}")


def critical_coded(test: TestRef, coded_value: str) -> CriticalDirection | None:
    """`abnormal` for a coded result on the test's critical list."""
    return CriticalDirection.abnormal if coded_value in lookup(test).critical_coded else None


def delta_check(test: TestRef, value: Decimal, previous_value: Decimal,
                elapsed: timedelta) -> bool:
    """True when the change from the previous result (`elapsed` earlier, both in the
    test's unit) exceeds the test's delta limit; False outside the window or for a
    test without one."""
    if elapsed < timedelta(0):
        raise ValueError("elapsed must not be negative")
    limit = lookup(test).delta
    if limit is None or elapsed > limit.window:
        return False
    change = abs(value - previous_value)
    if limit.kind is DeltaKind.absolute:
        return change > limit.limit
    if previous_value == 0:
        return change != 0
    return change * 100 / abs(previous_value) > limit.limit


def recognition_window(test: TestRef) -> timedelta | None:
    """How long a verified result is a recognised result (互认); None when the
    test is not on the recognition list."""
    return lookup(test).recognition_window


def price_item(test: TestRef) -> PriceItem | None:
    """The charge item of an orderable test; None for a line billed in its panel."""
    return lookup(test).price


def _regions(region: str) -> tuple[str, ...]:
    """The region, then its prefecture, then its province (GB/T 2260 codes)."""
    chain = [region]
    if len(region) == 6 and region.isdigit():
        chain += [region[:4] + "00", region[:2] + "0000"]
    return tuple(dict.fromkeys(chain))


def price_table(region: str, year: int) -> PriceTable:
    """The price table that applies in a region and year: the region's own, else
    its prefecture's, else its province's; within a region the latest table
    issued in or before `year` (a price table stays in force until replaced)."""
    tables = load_price_tables()
    for code in _regions(region):
        in_force = [t for t in tables if t.region == code and t.year <= year]
        if in_force:
            return max(in_force, key=lambda t: t.year)
    raise PriceNotFound(f"no price table for region {region} in {year}")


def price(item: str, region: str, year: int) -> Decimal:
    """The unit price (yuan) of a charge item in a region and year."""
    table = price_table(region, year)
    try:
        return table.prices[item]
    except KeyError:
        raise PriceNotFound(f"item {item} is not in price table {table.id}") from None

"""Benefit policy tables (data in policy/benefits-<region>-<year>.yaml).

One table per region and year, with effective dates and a version; each
parameter carries its source and its scope (annual, per stay, per settlement).
`policy_for(region, on)` picks the table in force on a date, a county
(6523xx) falling back to its prefecture (652300) and then its province
(650000); `policy_by_version` finds the table a stored settlement used.

Pure: the packaged YAML is read once (cached), nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from functools import cache
from importlib.resources import files
from typing import Any

import yaml

CENT = Decimal("0.01")


def cents(amount: Decimal) -> Decimal:
    """Round to the cent, half up (how a counter rounds yuan)."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


class Scheme(StrEnum):
    resident = "resident"  # 城乡居民基本医疗保险
    employee = "employee"  # 职工基本医疗保险


class AssistanceCategory(StrEnum):
    none = "none"
    low_income = "low_income"  # 低保对象
    extreme_poverty = "extreme_poverty"  # 特困人员
    orphan = "orphan"  # 孤儿
    returned_to_poverty = "returned_to_poverty"  # 返贫致贫人口
    near_poor = "near_poor"  # 低保边缘家庭成员
    impoverished_by_illness = "impoverished_by_illness"  # 因病致贫重病患者


class CareSetting(StrEnum):
    inpatient = "inpatient"
    outpatient = "outpatient"  # 门诊统筹


class ItemCategory(StrEnum):
    a = "a"  # 甲类
    b = "b"  # 乙类
    c = "c"  # 丙类
    out_of_catalogue = "out_of_catalogue"  # 目录外


class Scope(StrEnum):
    annual = "annual"
    per_stay = "per_stay"
    per_settlement = "per_settlement"


LEVELS = (1, 2, 3)  # 一级 / 二级 / 三级


@dataclass(frozen=True)
class BasicTerms:
    """基本医疗保险 of one scheme."""

    inpatient_deductible: Mapping[int, Decimal]  # per stay, by level
    inpatient_ratio: Mapping[int, Decimal]
    outpatient_deductible: Decimal  # annual
    outpatient_ratio: Mapping[int, Decimal]
    outpatient_annual_limit: Decimal
    annual_cap: Decimal  # the fund's annual cap, both settings together


@dataclass(frozen=True)
class Band:
    width: Decimal | None  # of the amount above the threshold; None = the rest
    ratio: Decimal


@dataclass(frozen=True)
class SecondTier:
    """大病保险 (residents) or 职工大额医疗费用补助 (employees)."""

    code: str  # critical_illness | large_amount_subsidy
    scheme: Scheme
    settings: frozenset[CareSetting]
    threshold: Decimal  # annual, before any tilt
    bands: tuple[Band, ...]
    annual_cap: Decimal
    tilt_categories: frozenset[AssistanceCategory]
    tilt_threshold_factor: Decimal
    tilt_ratio_points: Decimal
    tilt_removes_cap: bool


@dataclass(frozen=True)
class AssistanceTerms:
    """医疗救助 of one category: annual deductible, ratio, annual cap."""

    deductible: Decimal
    ratio: Decimal
    annual_cap: Decimal


@dataclass(frozen=True)
class PovertyWatch:
    formerly_poor_threshold: Decimal
    others_threshold: Decimal
    formerly_poor_share: Decimal
    others_share: Decimal
    rural_income: Decimal
    formerly_poor_categories: frozenset[AssistanceCategory]


@dataclass(frozen=True)
class PolicyTable:
    version: str
    region: str
    year: int
    effective_from: date
    effective_to: date
    income: Decimal  # previous year's per-capita disposable income
    category_share: Mapping[ItemCategory, Decimal]  # policy-range share of a line
    basic: Mapping[Scheme, BasicTerms]
    second_tier: Mapping[Scheme, SecondTier]
    assistance_settings: frozenset[CareSetting]
    assistance: Mapping[AssistanceCategory, AssistanceTerms]
    poverty_watch: PovertyWatch


class NoPolicy(LookupError):
    """No benefit table is in force for this region on this date."""


def decimal_of(raw: Any) -> Decimal:
    """A YAML number written as a string or an integer; floats are refused (a
    binary float would not be the value the source gives)."""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ValueError(f"write {raw!r} as a quoted decimal string")
    return Decimal(str(raw))


def _value(node: Mapping[str, Any]) -> Decimal:
    return decimal_of(node["value"])


def _ratio(value: Decimal, what: str) -> Decimal:
    if not 0 <= value <= 1:
        raise ValueError(f"{what}: a ratio is between 0 and 1, not {value}")
    return value


def _by_level(node: Mapping[str, Any]) -> dict[int, Decimal]:
    table = {int(level): decimal_of(v) for level, v in node["by_level"].items()}
    if set(table) != set(LEVELS):
        raise ValueError(f"by_level must give levels {LEVELS}")
    return table


def _settings(node: Mapping[str, Any]) -> frozenset[CareSetting]:
    return frozenset(CareSetting(s) for s in node["value"])


def _categories(node: Mapping[str, Any]) -> frozenset[AssistanceCategory]:
    return frozenset(AssistanceCategory(c) for c in node["value"])


def _basic(raw: Mapping[str, Any]) -> BasicTerms:
    for name in ("inpatient_ratio", "outpatient_ratio"):
        for level, ratio in _by_level(raw[name]).items():
            _ratio(ratio, f"{name}[{level}]")
    return BasicTerms(
        inpatient_deductible=_by_level(raw["inpatient_deductible"]),
        inpatient_ratio=_by_level(raw["inpatient_ratio"]),
        outpatient_deductible=_value(raw["outpatient_deductible"]),
        outpatient_ratio=_by_level(raw["outpatient_ratio"]),
        outpatient_annual_limit=_value(raw["outpatient_annual_limit"]),
        annual_cap=_value(raw["annual_cap"]),
    )


def _second_tier(code: str, raw: Mapping[str, Any], income: Decimal) -> SecondTier:
    if "threshold" in raw:
        threshold = _value(raw["threshold"])
    else:
        threshold = income * _value(raw["threshold_share_of_income"])
    bands = tuple(Band(None if r["width"] is None else decimal_of(r["width"]),
                       decimal_of(r["ratio"])) for r in raw["bands"]["rows"])
    if not bands or bands[-1].width is not None:
        raise ValueError(f"{code}: the last band must be open (width null)")
    tilt = raw["tilt"]
    for band in bands:
        _ratio(band.ratio + _value(tilt["ratio_points"]), f"{code} band with the tilt")
    return SecondTier(
        code=code,
        scheme=Scheme(raw["scheme"]),
        settings=_settings(raw["settings"]),
        threshold=cents(threshold),
        bands=bands,
        annual_cap=_value(raw["annual_cap"]),
        tilt_categories=_categories(tilt["categories"]),
        tilt_threshold_factor=_value(tilt["threshold_factor"]),
        tilt_ratio_points=_value(tilt["ratio_points"]),
        tilt_removes_cap=bool(tilt["removes_cap"]["value"]),
    )


def _table(raw: Mapping[str, Any]) -> PolicyTable:
    income = _value(raw["reference_income"]["all_residents"])
    rural = _value(raw["reference_income"]["rural"])
    tiers = [_second_tier(code, raw[code], income)
             for code in ("critical_illness", "large_amount_subsidy")]
    watch = raw["poverty_watch"]
    poor_share, others_share = _value(watch["formerly_poor_share"]), _value(watch["others_share"])
    assistance = {
        AssistanceCategory(name): AssistanceTerms(
            deductible=cents(income * _value(terms["deductible_share_of_income"])),
            ratio=_ratio(_value(terms["ratio"]), f"assistance {name}"),
            annual_cap=_value(terms["annual_cap"]),
        )
        for name, terms in raw["assistance"]["categories"].items()
    }
    if AssistanceCategory.none in assistance:
        raise ValueError("'none' is not an assistance category")
    return PolicyTable(
        version=str(raw["version"]),
        region=str(raw["region"]),
        year=int(raw["year"]),
        effective_from=date.fromisoformat(raw["effective_from"]),
        effective_to=date.fromisoformat(raw["effective_to"]),
        income=income,
        category_share={ItemCategory(k): _ratio(_value(v), f"item category {k}")
                        for k, v in raw["item_categories"].items() if k != "over_limit"},
        basic={Scheme(k): _basic(v) for k, v in raw["basic"].items()},
        second_tier={t.scheme: t for t in tiers},
        assistance_settings=_settings(raw["assistance"]["settings"]),
        assistance=assistance,
        poverty_watch=PovertyWatch(
            formerly_poor_threshold=cents(rural * poor_share),
            others_threshold=cents(rural * others_share),
            formerly_poor_share=poor_share,
            others_share=others_share,
            rural_income=rural,
            formerly_poor_categories=_categories(watch["formerly_poor_categories"]),
        ),
    )


def policy_files() -> list[str]:
    """The packaged benefit tables' file names."""
    return sorted(p.name for p in (files("yigongti_settlement") / "policy").iterdir()
                  if p.name.startswith("benefits-") and p.name.endswith(".yaml"))


def raw_policy(name: str) -> Any:
    return yaml.safe_load((files("yigongti_settlement") / "policy" / name).read_text("utf-8"))


@cache
def load_policies() -> tuple[PolicyTable, ...]:
    tables = tuple(_table(raw_policy(name)) for name in policy_files())
    versions = [t.version for t in tables]
    if len(versions) != len(set(versions)):
        raise ValueError("two benefit tables share a version")
    return tables


def policy_by_version(version: str) -> PolicyTable:
    for table in load_policies():
        if table.version == version:
            return table
    raise NoPolicy(version)


def _region_chain(region: str) -> tuple[str, ...]:
    """A county, then its prefecture, then its province (6-digit codes)."""
    return tuple(dict.fromkeys((region, region[:4] + "00", region[:2] + "0000")))


def policy_for(region: str, on: date) -> PolicyTable:
    """The table in force for the region (or the nearest enclosing one) on a date."""
    tables = load_policies()
    for code in _region_chain(region):
        for table in tables:
            if table.region == code and table.effective_from <= on <= table.effective_to:
                return table
    raise NoPolicy(f"{region} on {on.isoformat()}")

"""The settlement's policy tables as data (STYLE.md «Data with sources»): every
parameter has a source and a scope, versions and effective dates are sound,
and the scopes are the ones the calculation treats them as."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from importlib.resources import files
from typing import Any

import pytest
import yaml
from yigongti_settlement.benefits import (
    AssistanceCategory,
    NoPolicy,
    Scheme,
    Scope,
    load_policies,
    policy_by_version,
    policy_files,
    policy_for,
    raw_policy,
)
from yigongti_settlement.supervision import CreditLevel, Grade, Stage, load_rules

BENEFIT_FILES = policy_files()
PARAMETER_KEYS = {"value", "by_level", "rows"}


def _sourced(text: Any) -> bool:
    """A source names a document, or says "assumed: <why>" (never a bare "assumed")."""
    if not isinstance(text, str) or len(text.strip()) < 8:
        return False
    return not re.match(r"^assumed(?!: \S)", text.strip())


def _parameters(node: Any, path: str = ""):
    """Every parameter (a mapping with a value, by_level or rows), with its path."""
    if isinstance(node, dict):
        if PARAMETER_KEYS & node.keys():
            yield path, node
            return
        for key, value in node.items():
            yield from _parameters(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _parameters(item, f"{path}[{i}]")


def _text(name: str) -> str:
    return (files("yigongti_settlement") / "policy" / name).read_text("utf-8")


def test_there_are_benefit_tables_for_2024_to_2026():
    # 2026 carries 2025 forward (assumed, said in the file) so today's visits settle.
    assert [t.version for t in load_policies()] == ["652300-2024.1", "652300-2025.1",
                                                    "652300-2026.1"]


@pytest.mark.parametrize("name", BENEFIT_FILES)
def test_every_parameter_has_a_source_and_the_numbers_a_scope(name):
    params = list(_parameters(raw_policy(name)))
    assert len(params) > 40
    for path, node in params:
        assert _sourced(node.get("source")), f"{name}{path}: no source"
        numeric = "by_level" in node or "rows" in node or isinstance(node["value"], str | int) \
            and not isinstance(node["value"], bool)
        if numeric:
            assert node.get("scope") in set(Scope), f"{name}{path}: no scope"


@pytest.mark.parametrize("name", [*BENEFIT_FILES, "supervision.yaml"])
def test_every_assumption_gives_its_reason(name):
    for m in re.finditer(r"assumed:\s*([^\";]*)", _text(name)):
        assert len(m.group(1).strip()) >= 5, f"{name}: 'assumed:' without a reason"


@pytest.mark.parametrize("name", BENEFIT_FILES)
def test_money_and_ratios_are_quoted_decimals_not_floats(name):
    for path, node in _parameters(raw_policy(name)):
        values = (list(node.get("by_level", {}).values()) if "by_level" in node
                  else [v for row in node.get("rows", []) for v in row.values()]
                  if "rows" in node else [node["value"]])
        for value in values:
            assert not isinstance(value, float), f"{name}{path}: {value!r} is a float"


@pytest.mark.parametrize("name", BENEFIT_FILES)
def test_scopes_are_what_the_calculation_assumes(name):
    """payers.py applies the inpatient deductible per stay and the 大病, 大额 and
    assistance terms to the year's cumulative base: the table must say so."""
    raw = raw_policy(name)
    for scheme in ("resident", "employee"):
        basic = raw["basic"][scheme]
        assert basic["inpatient_deductible"]["scope"] == Scope.per_stay
        assert basic["outpatient_deductible"]["scope"] == Scope.annual
        assert basic["outpatient_annual_limit"]["scope"] == Scope.annual
        assert basic["annual_cap"]["scope"] == Scope.annual
        assert basic["inpatient_ratio"]["scope"] == Scope.per_settlement
    for tier in ("critical_illness", "large_amount_subsidy"):
        for key in ("bands", "annual_cap"):
            assert raw[tier][key]["scope"] == Scope.annual, (tier, key)
    for category, terms in raw["assistance"]["categories"].items():
        for key, node in terms.items():
            assert node["scope"] == Scope.annual, (category, key)


def test_versions_are_unique_and_effective_periods_do_not_overlap():
    tables = sorted(load_policies(), key=lambda t: (t.region, t.effective_from))
    for a, b in zip(tables, tables[1:], strict=False):
        if a.region == b.region:
            assert a.effective_to < b.effective_from, (a.version, b.version)
    for t in tables:
        assert t.effective_from.year == t.effective_to.year == t.year
        assert policy_by_version(t.version) is t


def test_a_county_falls_back_to_its_prefecture_and_a_date_outside_every_table_is_refused():
    assert policy_for("652328", date(2024, 1, 1)).version == "652300-2024.1"
    assert policy_for("652300", date(2025, 12, 31)).version == "652300-2025.1"
    with pytest.raises(NoPolicy):
        policy_for("652300", date(2023, 12, 31))
    with pytest.raises(NoPolicy):
        policy_for("110000", date(2025, 6, 1))


def test_derived_thresholds_follow_the_income():
    t = policy_by_version("652300-2024.1")
    assert t.second_tier[Scheme.resident].threshold == Decimal("14473.50")  # 50 % of 28,947
    assert t.assistance[AssistanceCategory.near_poor].deductible == Decimal("2894.70")  # 10 %
    assert t.assistance[AssistanceCategory.impoverished_by_illness].deductible \
        == Decimal("7236.75")  # 25 %
    assert t.poverty_watch.formerly_poor_threshold == Decimal("8974.00")  # 50 % of 17,948
    assert t.poverty_watch.others_threshold == Decimal("17948.00")


def test_every_assistance_category_has_terms():
    for table in load_policies():
        assert set(table.assistance) == set(AssistanceCategory) - {AssistanceCategory.none}
        assert set(table.basic) == set(Scheme) == set(table.second_tier)


@pytest.mark.parametrize("name", BENEFIT_FILES)
def test_no_parameter_is_fitted_as_the_tables_say(name):
    """The seed case is reproduced with example values and an assumed bill
    (test_settlement_worked_cases.py); a parameter tuned to a figure would be
    labelled "assumed: fitted" and this test would name it."""
    fitted = [path for path, node in _parameters(raw_policy(name)) if "fitted" in node["source"]]
    assert fitted == []


# --- supervision.yaml -------------------------------------------------------------------


def test_every_audit_rule_has_a_grade_stage_source_and_sourced_parameters():
    raw = yaml.safe_load(_text("supervision.yaml"))
    ids = [r["id"] for r in raw["rules"]]
    assert len(ids) == len(set(ids)) == 8
    for rule in raw["rules"]:
        Grade(rule["grade"]), Stage(rule["stage"])
        assert _sourced(rule["source"]), rule["id"]
        for key, node in (rule.get("params") or {}).items():
            assert _sourced(node.get("source")), f"{rule['id']}.{key}"
    assert set(raw["credit_levels"]) == set(CreditLevel)
    for level, node in raw["credit_levels"].items():
        assert _sourced(node["source"]), level
        assert 0 <= Decimal(node["sample_share"]) <= 1
    assert set(load_rules()) == set(ids)

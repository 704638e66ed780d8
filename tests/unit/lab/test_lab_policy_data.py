"""The lab's policy tables as data (STYLE.md «Data with sources»): every row has
a source, and the tables agree with each other and with the contracts."""

from __future__ import annotations

import re
from decimal import Decimal
from importlib.resources import files
from typing import Any

import pytest
import yaml
from yigongti_contracts.common import Sex
from yigongti_contracts.lab.codes import (
    PolicyCategory,
    ProcessingState,
    TubeType,
)
from yigongti_contracts.refdata import Kind
from yigongti_contracts.refdata import load as load_refdata
from yigongti_lab.catalogue import Discipline, age_in_days, load_catalogue, load_price_tables
from yigongti_lab.stability import TemperatureClass

POLICY_FILES = ("catalogue.yaml", "prices.yaml", "stability.yaml", "oncall.yaml",
                "turnaround.yaml")
UCUM_ASCII = re.compile(r"^[!-~]{1,32}$")  # the contracts' Unit pattern


def policy(name: str) -> Any:
    return yaml.safe_load((files("yigongti_lab") / "policy" / name).read_text("utf-8"))


def _sourced(text: Any) -> bool:
    """A source names a document, or says "assumed: <why>" (never a bare "assumed")."""
    if not isinstance(text, str) or len(text.strip()) < 8:
        return False
    return not re.match(r"^assumed(?!: \S)", text.strip())


def _rows(node: Any, path: str = ""):
    """Every mapping that sits in a list (a table row), with its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _rows(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if isinstance(item, dict):
                yield f"{path}[{i}]", item
            yield from _rows(item, f"{path}[{i}]")


@pytest.mark.parametrize("name", POLICY_FILES)
def test_every_row_has_a_source(name):
    missing = [path for path, row in _rows(policy(name)) if not _sourced(row.get("source"))]
    assert not missing, f"{name}: rows without a source: {missing}"


def test_every_assumption_gives_its_reason():
    for name in POLICY_FILES:
        text = (files("yigongti_lab") / "policy" / name).read_text("utf-8")
        for m in re.finditer(r"assumed:\s*([^\";]*)", text):
            assert len(m.group(1).strip()) >= 5, f"{name}: 'assumed:' without a reason"


def test_catalogue_blocks_have_sources():
    for raw in policy("catalogue.yaml")["tests"]:
        code = raw["code"]
        assert _sourced(raw.get("recognition_source")), code
        for block in ("delta", "price"):
            if raw.get(block) is not None:
                assert _sourced(raw[block].get("source")), f"{code}.{block}"
        if raw.get("critical_coded"):
            assert _sourced(raw.get("critical_coded_source")), code


def test_price_items_have_sources():
    for table in policy("prices.yaml")["tables"]:
        assert _sourced(table["source"])
        for code, item in table["items"].items():
            assert _sourced(item.get("source")), code


def test_stability_blocks_have_sources():
    raw = policy("stability.yaml")
    for block in ("transport_class", "haemolysis", "lipaemia"):
        assert _sourced(raw[block].get("source")), block


def test_oncall_and_turnaround_blocks_have_sources():
    assert _sourced(policy("oncall.yaml")["escalation_source"])
    raw = policy("turnaround.yaml")
    assert _sourced(raw["interval_source"]) and _sourced(raw["benchmarks"]["source"])
    assert _sourced(raw["benchmarks"]["pre_analytic"]["source"])


# --- the catalogue ------------------------------------------------------------------


def test_catalogue_codes_are_unique_and_contract_shaped():
    codes = [t["code"] for t in policy("catalogue.yaml")["tests"]]
    assert len(codes) == len(set(codes))
    assert all(re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$", c) for c in codes)


def test_every_test_has_a_contract_tube_unit_and_discipline():
    for raw in policy("catalogue.yaml")["tests"]:
        TubeType(raw["tube"])
        Discipline(raw["discipline"])
        unit = raw.get("unit")
        assert unit is None or UCUM_ASCII.match(unit), raw["code"]
        if raw.get("loinc") is not None:
            assert re.match(r"^\d{1,7}-\d$", raw["loinc"]), raw["code"]


def test_every_orderable_test_has_a_price_in_the_price_table():
    tables = load_price_tables()
    assert tables
    for test in load_catalogue().values():
        if not test.orderable:
            continue
        assert test.price is not None, f"{test.code} has no price item"
        assert test.price.policy_category in PolicyCategory
        for table in tables:
            assert test.price.item in table.prices, f"{test.code}: {test.price.item} not in {table.id}"


def test_a_line_without_a_price_is_reported_in_a_priced_panel():
    catalogue = load_catalogue()
    panels = {line: t for t in catalogue.values() if t.orderable for line in t.reports}
    for test in catalogue.values():
        if test.price is None:
            assert not test.orderable, test.code
            assert test.code in panels and panels[test.code].price is not None, test.code
        for line in test.reports:
            assert line in catalogue, f"{test.code} reports unknown {line}"
            assert catalogue[line].tube == test.tube, f"{test.code}: {line} in another tube"


def test_every_critical_limit_is_in_the_tests_unit_and_ordered():
    for test in load_catalogue().values():
        for limit in test.critical:
            assert limit.unit == test.unit, f"{test.code}: critical in {limit.unit}"
            assert limit.low is not None or limit.high is not None, test.code
            if limit.low is not None and limit.high is not None:
                assert limit.low < limit.high, test.code


def test_reference_bands_are_sane_and_do_not_overlap():
    for test in load_catalogue().values():
        for band in test.reference_ranges:
            assert band.low is not None or band.high is not None, test.code
            if band.low is not None and band.high is not None:
                assert band.low < band.high, test.code
            if band.age_to_days is not None:
                assert band.age_from_days < band.age_to_days, test.code
        for sex in (Sex.male, Sex.female):
            for age_days in range(0, 100 * 365, 7):
                hits = [b for b in test.reference_ranges
                        if b.covers(age_days) and b.sex in (sex, None)]
                assert len(hits) <= 1, f"{test.code}: overlapping bands at {age_days} d ({sex})"


def test_critical_limits_lie_outside_the_adult_reference_interval():
    for test in load_catalogue().values():
        for limit in test.critical:
            for band in test.reference_ranges:
                if band.age_from_days < age_in_days("18y"):
                    continue
                if limit.low is not None and band.low is not None:
                    assert limit.low <= band.low, test.code
                if limit.high is not None and band.high is not None:
                    assert limit.high >= band.high, test.code


def test_every_recognition_list_test_has_a_window():
    for raw in policy("catalogue.yaml")["tests"]:
        window = raw.get("recognition_window_days")
        if raw["recognised"]:
            assert isinstance(window, int) and window > 0, raw["code"]
        else:
            assert window is None, raw["code"]


def test_analyser_codes_name_one_test_each():
    seen: dict[str, str] = {}
    for test in load_catalogue().values():
        assert test.analyser_codes, test.code
        assert test.loinc is None or test.loinc in test.analyser_codes, test.code
        for code in test.analyser_codes:
            assert seen.setdefault(code.upper(), test.code) == test.code, code
    for test in load_catalogue().values():  # a catalogue code is no other test's alias
        assert seen.get(test.code.upper(), test.code) == test.code


def test_numbers_are_written_as_strings_not_floats():
    def floats(node: Any, path: str = ""):
        if isinstance(node, float):
            yield path
        elif isinstance(node, dict):
            for k, v in node.items():
                yield from floats(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from floats(v, f"{path}[{i}]")

    for name in POLICY_FILES:
        assert not list(floats(policy(name))), name


# --- stability ------------------------------------------------------------------------


def test_every_catalogue_test_has_a_full_stability_grid_for_its_tube():
    raw = policy("stability.yaml")
    pairs: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for group in raw["groups"]:
        cells = {(r["state"], r["temperature"]) for r in group["limits"]}
        assert cells == {(s.value, c.value) for s in ProcessingState for c in TemperatureClass}, \
            group["name"]
        for row in group["limits"]:
            assert isinstance(row["minutes"], int) and row["minutes"] >= 0
        for test in group["tests"]:
            for tube in group["tubes"]:
                TubeType(tube)
                assert (test, tube) not in pairs, f"{test}×{tube} in two groups"
                pairs[(test, tube)] = cells
    catalogue = load_catalogue()
    for test in catalogue.values():
        assert (test.code, test.tube.value) in pairs, f"no stability rows for {test.code}"
    for test, _tube in pairs:
        assert test in catalogue, f"stability row for unknown test {test}"


def test_temperature_classes_match_the_enum():
    raw = policy("stability.yaml")
    assert {c["class"] for c in raw["temperature_classes"]} == {c.value for c in TemperatureClass}
    assert Decimal(raw["haemolysis"]["free_hb_g_per_l"]) == Decimal("1.0")


# --- roster and turnaround ------------------------------------------------------------


def test_oncall_covers_every_lab_centre_of_the_refdata():
    raw = policy("oncall.yaml")
    centres = {c["lab_centre"] for c in raw["lab_centres"]}
    assert centres == {i.id for i in load_refdata().of_kind(Kind.lab_centre)}
    assert raw["escalation_interval_minutes"] == 15
    staff = [e["staff_id"] for c in raw["lab_centres"] for e in c["roster"]]
    assert all(re.match(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$", s) for s in staff)


def test_price_tables_are_identified_and_unique():
    keys = [(t.region, t.year) for t in load_price_tables()]
    assert len(keys) == len(set(keys))
    for t in load_price_tables():
        assert re.match(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$", t.id)  # contracts Identifier
        assert re.match(r"^[1-9][0-9]{5}$", t.region)

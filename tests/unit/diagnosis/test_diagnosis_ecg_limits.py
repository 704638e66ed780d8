"""Automatic ECG limits as data (policy/ecg_critical.yaml) and the priority rule."""

from __future__ import annotations

import dataclasses
import re
from importlib.resources import files

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from yigongti_diagnosis.ecg_limits import (
    Breach,
    Priority,
    breaches,
    load_policy,
    raised_priority,
)
from yigongti_diagnosis.measure import Measurements

NORMAL = {"heart_rate_bpm": 72.0, "longest_pause_s": 0.9, "rr_cv_percent": 3.0,
          "qrs_ms": 90.0, "qtc_ms": 410.0}


def measured(**changes) -> dict:
    return NORMAL | changes


@pytest.mark.parametrize(("values", "codes"), [
    (measured(), []),
    (measured(heart_rate_bpm=34.9), ["ventricular_rate_below_35"]),
    (measured(heart_rate_bpm=35.0), []),
    (measured(longest_pause_s=3.0), ["pause_3s_or_longer"]),
    (measured(longest_pause_s=2.99), []),
    (measured(heart_rate_bpm=179.9), []),
    (measured(heart_rate_bpm=180.0), ["rate_180_or_faster"]),
    (measured(heart_rate_bpm=229.9), ["rate_180_or_faster"]),
    (measured(heart_rate_bpm=230.0), ["rate_230_or_faster", "rate_180_or_faster"]),
    (measured(heart_rate_bpm=30.0, longest_pause_s=4.2),
     ["ventricular_rate_below_35", "pause_3s_or_longer"]),
    (measured(heart_rate_bpm=None, longest_pause_s=10.0), ["pause_3s_or_longer"]),  # flat line
    (measured(heart_rate_bpm=None), []),  # a withheld figure breaches nothing
])
def test_measurements_beyond_a_limit_are_named_by_code(values, codes):
    assert [b.code for b in breaches(values)] == codes


def test_a_breach_says_the_limit_not_a_diagnosis_or_the_value():
    (breach,) = breaches(measured(longest_pause_s=4.2))
    assert breach == Breach("pause_3s_or_longer", "longest_pause_s", ">=", 3.0, "s")
    assert {f.name for f in dataclasses.fields(Breach)} == {
        "code", "measurement", "comparator", "limit", "unit"}
    for limit in load_policy().limits:  # no rhythm or infarct names in the codes
        assert not re.search(r"stemi|infarct|af\b|fibrillation|flutter|svt|vt\b", limit.code)


def test_breaches_accept_the_measurements_object():
    m = Measurements(heart_rate_bpm=31.0, rr_cv_percent=2.0, longest_pause_s=2.0, qrs_ms=90.0,
                     qt_ms=400.0, qtc_ms=420.0, qtc_bazett_ms=430.0, beats=5,
                     detection_lead="II")
    assert [b.code for b in breaches(m)] == ["ventricular_rate_below_35"]


def test_limits_are_the_domain_rules_numbers_each_with_a_source():
    raw = yaml.safe_load((files("yigongti_diagnosis") / "policy" / "ecg_critical.yaml")
                         .read_text("utf-8"))
    by_code = {row["code"]: row for row in raw["limits"]}
    assert {code: (row["comparator"], row["value"]) for code, row in by_code.items()} == {
        "ventricular_rate_below_35": ("<", 35),
        "pause_3s_or_longer": (">=", 3.0),
        "rate_230_or_faster": (">=", 230),
        "rate_180_or_faster": (">=", 180),
    }
    for row in raw["limits"]:
        assert "domain-rules.md §4" in row["source"]
        assert len(row["applies_to"]) > 20
    # What the source does not say is marked assumed.
    assert "assumed:" in by_code["rate_180_or_faster"]["applies_to"]
    assert "assumed:" in by_code["rate_230_or_faster"]["applies_to"]
    assert load_policy().raises_to is Priority.STAT and raw["raises_to_source"]


@pytest.mark.parametrize(("current", "found", "expected"), [
    (Priority.ROUTINE, [], Priority.ROUTINE),
    (Priority.URGENT, [], Priority.URGENT),
    (Priority.ROUTINE, ["x"], Priority.STAT),
    (Priority.URGENT, ["x"], Priority.STAT),
    (Priority.STAT, ["x"], Priority.STAT),
])
def test_a_breach_raises_the_priority_to_stat(current, found, expected):
    found = [Breach(code, "heart_rate_bpm", "<", 35, "/min") for code in found]
    assert raised_priority(current, found) is expected


@given(current=st.sampled_from(Priority), target=st.sampled_from(Priority),
       n=st.integers(0, 3))
def test_a_priority_is_never_lowered(current, target, n):
    found = [Breach("pause_3s_or_longer", "longest_pause_s", ">=", 3.0, "s")] * n
    after = raised_priority(current, found, raises_to=target)
    assert after.rank >= current.rank
    assert after is (current if n == 0 else max(current, target, key=lambda p: p.rank))


def test_priority_order_is_stat_urgent_routine():
    assert Priority.STAT.rank > Priority.URGENT.rank > Priority.ROUTINE.rank

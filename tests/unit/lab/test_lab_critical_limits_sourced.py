"""A critical limit is a call to act now, not the edge of normal (issue 8,
item 21): none equals a reference limit, and troponin's has a source of its
own (a published critical-value list), not the 99th percentile it was copied
from, which made every troponin above normal a critical call."""

from __future__ import annotations

from decimal import Decimal

from yigongti_contracts.common import Age, AgeUnit, Sex
from yigongti_contracts.lab.codes import CriticalDirection
from yigongti_lab.catalogue import _policy as policy
from yigongti_lab.catalogue import critical, load_catalogue, reference_range


def test_no_critical_limit_is_a_reference_limit():
    for test in load_catalogue().values():
        for limit in test.critical:
            for band in test.reference_ranges:
                assert limit.high is None or limit.high != band.high, test.code
                assert limit.low is None or limit.low != band.low, test.code


def test_troponin_above_its_99th_percentile_is_high_but_not_critical():
    _, upper = reference_range("CTNI", Sex.male, Age(value=60, unit=AgeUnit.years))
    just_above = upper + Decimal("0.1")
    assert critical("CTNI", just_above, "ng/L") is None
    limit = load_catalogue()["CTNI"].critical[0].high
    assert limit > upper
    assert critical("CTNI", limit + 1, "ng/L") is CriticalDirection.high


def test_the_troponin_critical_limit_has_its_own_source():
    [entry] = [t for t in policy("catalogue.yaml")["tests"] if t["code"] == "CTNI"]
    [limit] = entry["critical"]
    source = limit["source"]
    reference_source = entry["reference_ranges"][0]["source"]
    assert source != reference_source
    # a published critical-value list, or "assumed" with the reason
    assert "critical values list" in source.lower() or source.startswith("assumed:")

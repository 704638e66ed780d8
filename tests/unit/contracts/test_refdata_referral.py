"""Changji reference data for two-way referral: capabilities, travel times and
the order in which candidate institutions are tried."""

from __future__ import annotations

import re
from importlib import resources

import pytest
import yaml
from yigongti_contracts.refdata import Capability, Kind, RefDataError, load, parse

SEED_FILES = {
    "000_c4e5fff8b79dd7ff.txt", "001_9b82cb13bb356978.txt", "002_babf097a97a11a47.txt",
    "003_87b0b49a3a6778cb.txt", "004_52f552bfff76e171.txt",
}


@pytest.fixture(scope="module")
def ref():
    return load()


def _raw() -> dict:
    text = resources.files("yigongti_contracts.refdata").joinpath("changji.yaml").read_text()
    return yaml.safe_load(text)


def test_every_capability_code_is_described_once(ref) -> None:
    assert sorted(c.code for c in ref.referral.capabilities) == sorted(Capability)


def test_every_referral_row_quotes_a_seed_or_says_assumed(ref) -> None:
    r = ref.referral
    sources = [*(c.source for c in r.capabilities), *(k.source for k in r.by_kind),
               *(g.source for g in r.institutions), *(t.source for t in r.travel),
               r.candidate_order.source]
    for source in sources:
        files = re.findall(r"\d{3}_[0-9a-f]{16}\.txt", source)
        assert source.startswith("assumed: ") or files, source
        assert set(files) <= SEED_FILES, source


@pytest.mark.parametrize("institution,capability", [
    ("652302-H01", Capability.chest_pain_centre),  # 阜康: CCU and cath lab (seed 000)
    ("652302-H01", Capability.intensive_care),
    ("652300-P02", Capability.dialysis),  # 血液净化室 (seed 002)
    ("652300-P01", Capability.stroke_centre),
    ("652301-H01", Capability.chest_pain_centre),  # the county centre of DESIGN §3
    ("652323-B01", Capability.rehabilitation),  # 大丰镇分院 针灸理疗 (seed 001)
    ("652323-B01", Capability.inpatient),
    ("652301-B01", Capability.rehabilitation),  # 佃坝镇分院 中医康复 (seed 000)
    ("652325-H01", Capability.inpatient),  # every total hospital admits
])
def test_capabilities_from_the_seeds_and_the_kind(ref, institution, capability) -> None:
    assert ref.has_capability(institution, capability)
    assert capability in ref.capability_sources(institution)


@pytest.mark.parametrize("institution,capability", [
    ("652328-H01", Capability.stroke_centre),  # 木垒 sent its stroke on (seed 000)
    ("652325-H01", Capability.chest_pain_centre),
    ("652301-B02", Capability.inpatient),
    ("652301-L01", Capability.inpatient),  # a lab centre takes no patients
])
def test_capabilities_not_given(ref, institution, capability) -> None:
    assert not ref.has_capability(institution, capability)


def test_the_fukang_cath_lab_is_quoted_not_assumed(ref) -> None:
    source = ref.capability_sources("652302-H01")[Capability.chest_pain_centre]
    assert "心脏介入室（DSA）" in source and "assumed" not in source


def test_travel_time_either_way_and_unknown(ref) -> None:
    assert ref.travel_minutes("652301-B02", "652300-P02") == 15
    assert ref.travel_minutes("652300-P02", "652301-B02") == 15
    assert ref.travel_minutes("652301-B02", "652301-H01") is None


def test_stemi_at_daxiqu_goes_to_its_own_county_first(ref) -> None:
    # The P02 travel time is sourced, the county's is not: the rule decides,
    # and the timed prefecture hospital comes before the untimed one.
    ids = [i.id for i in ref.upward_candidates("652301-B02", Capability.chest_pain_centre)]
    assert ids == ["652301-H01", "652300-P02", "652300-P01"]


def test_county_without_the_capability_goes_to_the_prefecture(ref) -> None:
    ids = [i.id for i in ref.upward_candidates("652325-B01", Capability.chest_pain_centre)]
    assert ids == ["652300-P01", "652300-P02"]


def test_a_village_goes_to_its_township_then_its_county_then_the_prefecture(ref) -> None:
    ids = [i.id for i in ref.upward_candidates("652325-V01")]
    assert ids == ["652325-B01", "652325-H01", "652300-P01", "652300-P02"]


def test_nothing_above_the_prefecture_for_dialysis_elsewhere(ref) -> None:
    assert [i.id for i in ref.upward_candidates("652300-P02", Capability.dialysis)] == \
        ["652300-P01"]
    assert ref.upward_candidates("652300-P01", Capability.trauma_centre) == ()


def test_travel_time_reorders_across_steps_only_when_known_for_all() -> None:
    raw = _raw()
    raw["referral"]["travel"] = [
        {"between": ["652301-B02", "652301-H01"], "minutes": 40, "source": "assumed: test"},
        {"between": ["652301-B02", "652300-P02"], "minutes": 15, "source": "assumed: test"},
        {"between": ["652301-B02", "652300-P01"], "minutes": 30, "source": "assumed: test"},
    ]
    data = parse(yaml.safe_dump(raw, allow_unicode=True))
    ids = [i.id for i in data.upward_candidates("652301-B02", Capability.chest_pain_centre)]
    assert ids == ["652300-P02", "652300-P01", "652301-H01"]


def test_no_referral_section_is_an_answer_not_a_crash() -> None:
    raw = _raw()
    del raw["referral"]
    data = parse(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(RefDataError):
        data.capabilities_of("652325-H01")


@pytest.mark.parametrize("change", [
    lambda r: r["institutions"].append(
        {"institution": "652399-H01", "capability": "dialysis", "source": "assumed: t"}),
    lambda r: r["institutions"].append(
        {"institution": "652325-L01", "capability": "dialysis", "source": "assumed: t"}),
    lambda r: r["institutions"].append(dict(r["institutions"][0])),
    lambda r: r["capabilities"].pop(),
    lambda r: r["by_kind"].append(
        {"kind": "ecg_centre", "capabilities": ["inpatient"], "source": "assumed: t"}),
    lambda r: r["travel"].append(
        {"between": ["652301-B02", "652301-B02"], "minutes": 1, "source": "assumed: t"}),
    lambda r: r["institutions"].append(
        {"institution": "652325-H01", "capability": "dialysis", "source": "a newspaper"}),
    lambda r: r["candidate_order"].update(steps=["nearest_anything"]),
])
def test_integrity_checks_refuse_bad_referral_data(change) -> None:
    raw = _raw()
    change(raw["referral"])
    with pytest.raises(ValueError):
        parse(yaml.safe_dump(raw, allow_unicode=True))


def test_only_clinical_kinds_have_capabilities(ref) -> None:
    for inst in ref.institutions:
        if inst.kind in (Kind.lab_centre, Kind.ecg_centre, Kind.imaging_centre):
            assert ref.capabilities_of(inst.id) == frozenset()

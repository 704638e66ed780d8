"""Changji medical community reference data: shape, sources and look-ups."""

from __future__ import annotations

import re
from importlib import resources

import pytest
import yaml
from yigongti_contracts.common import INSTITUTION_ID_PATTERN
from yigongti_contracts.lab.codes import OverrideReason
from yigongti_contracts.refdata import Kind, RefDataError, load, parse
from yigongti_contracts.refdata.__main__ import unmatched_quotes

SEED_FILES = {
    "000_c4e5fff8b79dd7ff.txt", "001_9b82cb13bb356978.txt", "002_babf097a97a11a47.txt",
    "003_87b0b49a3a6778cb.txt", "004_52f552bfff76e171.txt",
}
COUNTIES = {
    "652301": "昌吉市", "652302": "阜康市", "652323": "呼图壁县", "652324": "玛纳斯县",
    "652325": "奇台县", "652327": "吉木萨尔县", "652328": "木垒县",
}


@pytest.fixture(scope="module")
def ref():
    return load()


def test_prefecture_and_its_seven_counties(ref) -> None:
    assert ref.prefecture.code == "652300" and ref.prefecture.name == "昌吉州"
    assert {c.code: c.name for c in ref.counties} == COUNTIES
    assert ref.facts["counties_and_cities"].value == len(ref.counties) == 7


def test_eight_total_hospitals_reported_seven_named(ref) -> None:
    assert ref.facts["total_hospitals"].value == 8
    assert len(ref.of_kind(Kind.total_hospital)) == 7
    assert "not named" in (ref.facts["total_hospitals"].note or "")


def test_each_county_has_a_total_hospital_and_its_three_centres(ref) -> None:
    for code in COUNTIES:
        kinds = [i.kind for i in ref.in_county(code)]
        for kind in (Kind.total_hospital, Kind.lab_centre, Kind.ecg_centre,
                     Kind.imaging_centre):
            assert kinds.count(kind) == 1, (code, kind)


@pytest.mark.parametrize("name", [
    "奇台县总医院乔仁乡分院", "呼图壁县总医院大丰镇分院", "玛纳斯县总医院旱卡子滩乡分院",
    "吉木萨尔县总医院三台镇分院", "吉木萨尔县总医院五彩湾分院", "奇台县总医院芨芨湖分院",
    "昌吉市人民医院总医院佃坝镇分院", "昌吉市大西渠镇卫生院",
])
def test_township_branches_from_the_seeds(ref, name: str) -> None:
    assert name in {i.name for i in ref.of_kind("township_branch")}


@pytest.mark.parametrize("village", ["乔仁村", "新户村", "大土古里村", "上二工村", "东地村"])
def test_village_clinics_from_the_seeds(ref, village: str) -> None:
    clinics = [i for i in ref.of_kind("village_clinic") if village in i.name]
    assert len(clinics) == 1
    assert ref.institution(clinics[0].parent).kind is Kind.township_branch


def test_ids_follow_the_scheme(ref) -> None:
    letters = {"total_hospital": "H", "township_branch": "B", "village_clinic": "V",
               "lab_centre": "L", "ecg_centre": "E", "imaging_centre": "I",
               "prefecture_hospital": "P"}
    for inst in ref.institutions:
        assert re.fullmatch(INSTITUTION_ID_PATTERN, inst.id)
        assert inst.id.startswith(inst.county + "-" + letters[inst.kind])


def test_every_entry_has_a_seed_quote_or_an_assumption(ref) -> None:
    sources = [ref.prefecture.source, *(c.source for c in ref.counties),
               *(i.source for i in ref.institutions), *(f.source for f in ref.facts.values()),
               *(lv.source for lv in ref.levels.values())]
    for source in sources:
        files = re.findall(r"\d{3}_[0-9a-f]{16}\.txt", source)
        assert source.startswith("assumed: ") or files, source
        assert set(files) <= SEED_FILES, source


def test_quote_checker_finds_a_misquote() -> None:
    data = {"source": "001_9b82cb13bb356978.txt: «玛纳斯县总医院»; «不存在的分院»"}
    seeds = {"001_9b82cb13bb356978.txt": "……得益于玛纳斯县总医院成立了……"}
    assert unmatched_quotes(data, seeds) == ["001_9b82cb13bb356978.txt: 不存在的分院"]


def test_manas_lab_centre_is_from_the_seed(ref) -> None:
    lab = ref.lab_centre_for("652324-B01")  # 旱卡子滩乡
    assert lab.name == "玛纳斯县总医院医学检验共享中心"
    assert not lab.source.startswith("assumed")


@pytest.mark.parametrize("institution,lab", [
    ("652325-V01", "652325-L01"), ("652325-B02", "652325-L01"), ("652325-H01", "652325-L01"),
    ("652301-B02", "652301-L01"), ("652328-V01", "652328-L01"),
])
def test_lab_centre_of_the_own_total_hospital(ref, institution: str, lab: str) -> None:
    assert ref.lab_centre_for(institution).id == lab


def test_the_seeds_ecg_case_reads_at_the_university_branch(ref) -> None:
    assert ref.reading_centre_for("652301-B02", "ECG").id == "652300-E01"
    assert ref.reading_centre_for("652301-B02", "CT").id == "652301-I01"
    assert ref.reading_centre_for("652301-B01", "ECG").id == "652301-E01"


def test_unknown_look_ups(ref) -> None:
    with pytest.raises(KeyError):
        ref.institution("652399-H01")
    with pytest.raises(RefDataError):
        ref.lab_centre_for("652300-P01")
    with pytest.raises(ValueError):
        ref.reading_centre_for("652301-B02", "PET")


def test_levels(ref) -> None:
    assert ref.level_of("652325-H01") == 2
    assert ref.level_of("652325-B01") == 1
    assert ref.level_of("652325-V01") == 1
    assert ref.level_of("652300-P01") == 3


def test_override_reasons_match_the_contract_enum(ref) -> None:
    assert ref.override_reason_codes() == tuple(r.value for r in OverrideReason)
    assert len(ref.recognition.member_hospitals.names) == 16


def _minimal(**institution) -> str:
    text = resources.files("yigongti_contracts.refdata").joinpath("changji.yaml").read_text()
    base = yaml.safe_load(text)
    base["institutions"].append(institution)
    return yaml.safe_dump(base, allow_unicode=True)


@pytest.mark.parametrize("bad", [
    {"id": "652325-B09", "name": "x", "kind": "township_branch", "county": "652325",
     "source": "assumed: test"},  # no parent
    {"id": "652325-H09", "name": "x", "kind": "township_branch", "county": "652325",
     "parent": "652325-H01", "source": "assumed: test"},  # letter does not match kind
    {"id": "652325-B09", "name": "x", "kind": "township_branch", "county": "652325",
     "parent": "652325-H01", "source": "a newspaper"},  # unsourced
    {"id": "652325-B01", "name": "x", "kind": "township_branch", "county": "652325",
     "parent": "652325-H01", "source": "assumed: test"},  # duplicate id
    {"id": "652325-V09", "name": "x", "kind": "village_clinic", "county": "652325",
     "parent": "652325-H01", "source": "assumed: test"},  # village under a total hospital
])
def test_integrity_checks_refuse_bad_data(bad: dict) -> None:
    with pytest.raises(ValueError):
        parse(_minimal(**bad))

"""Changji medical community reference data (changji.yaml) and its loader.

`load()` reads and checks the packaged YAML once: counties, institutions with
their kind, insurance level, parent and source, and which shared centre serves
which institution; for two-way referral (双向转诊), which institution has which
capability, sourced travel times, and the order in which candidates are tried.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..common import INSTITUTION_ID_PATTERN

SOURCE_PATTERN = re.compile(r"^(assumed: .+|\d{3}_[0-9a-f]{16}\.txt: «[^»]+».*)$")


class Kind(StrEnum):
    total_hospital = "total_hospital"
    township_branch = "township_branch"
    village_clinic = "village_clinic"
    lab_centre = "lab_centre"
    ecg_centre = "ecg_centre"
    imaging_centre = "imaging_centre"
    prefecture_hospital = "prefecture_hospital"


KIND_LETTER = {
    Kind.total_hospital: "H",
    Kind.township_branch: "B",
    Kind.village_clinic: "V",
    Kind.lab_centre: "L",
    Kind.ecg_centre: "E",
    Kind.imaging_centre: "I",
    Kind.prefecture_hospital: "P",
}
CENTRES = (Kind.lab_centre, Kind.ecg_centre, Kind.imaging_centre)
# The kind a parent must have.
PARENT_KINDS = {
    Kind.township_branch: (Kind.total_hospital,),
    Kind.village_clinic: (Kind.township_branch,),
    Kind.lab_centre: (Kind.total_hospital, Kind.prefecture_hospital),
    Kind.ecg_centre: (Kind.total_hospital, Kind.prefecture_hospital),
    Kind.imaging_centre: (Kind.total_hospital, Kind.prefecture_hospital),
}
# Which reading centre reads which modality (DESIGN §4 diagnosis: ECG/DX/CT/US/MR).
MODALITY_CENTRE = {
    "ECG": Kind.ecg_centre,
    "DX": Kind.imaging_centre,
    "CT": Kind.imaging_centre,
    "US": Kind.imaging_centre,
    "MR": Kind.imaging_centre,
}


class Capability(StrEnum):
    """What an institution can take a referred patient for (refdata `referral`)."""

    chest_pain_centre = "chest_pain_centre"  # 胸痛中心
    stroke_centre = "stroke_centre"  # 卒中中心
    trauma_centre = "trauma_centre"  # 创伤中心
    intensive_care = "intensive_care"  # ICU / CCU
    dialysis = "dialysis"  # 血液透析
    inpatient = "inpatient"  # 住院
    rehabilitation = "rehabilitation"  # 康复, including TCM rehabilitation


# Kinds that treat patients, and so send and receive referrals; the shared
# centres (lab, ECG, imaging) do neither.
CLINICAL_KINDS = (Kind.village_clinic, Kind.township_branch, Kind.total_hospital,
                  Kind.prefecture_hospital)


class RefDataError(LookupError):
    """No institution or centre answers the question."""


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _sourced(value: str) -> str:
    if not SOURCE_PATTERN.match(value):
        raise ValueError("source must quote a seed or say 'assumed: <why>'")
    return value


class _Sourced(_Data):
    source: str

    @field_validator("source")
    @classmethod
    def _quoted_or_assumed(cls, value: str) -> str:
        return _sourced(value)


class Prefecture(_Sourced):
    code: str = Field(pattern=r"^[1-9][0-9]{3}00$")
    name: str
    official_name: str


class County(_Sourced):
    code: str = Field(pattern=r"^[1-9][0-9]{5}$")
    name: str
    official_name: str | None = None


class Fact(_Sourced):
    value: int
    note: str | None = None


class Level(_Sourced):
    level: int = Field(ge=1, le=3)


class Institution(_Sourced):
    id: str = Field(pattern=INSTITUTION_ID_PATTERN)
    name: str
    kind: Kind
    county: str = Field(description="Admin code: the county's, or the prefecture's.")
    parent: str | None = None
    serves: tuple[str, ...] = Field(default=(), description="Explicit clients of a centre.")
    level: int | None = Field(default=None, ge=1, le=3)
    level_source: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Institution:
        if self.id[:6] != self.county or self.id[7] != KIND_LETTER[self.kind]:
            raise ValueError(f"{self.id}: id must be <admin code>-<kind letter><n>")
        if (self.level is None) != (self.level_source is None):
            raise ValueError(f"{self.id}: a level override needs its source")
        if self.level_source is not None:
            _sourced(self.level_source)
        if self.serves and self.kind not in CENTRES:
            raise ValueError(f"{self.id}: only centres serve others")
        return self


class OverrideReasonText(_Sourced):
    code: str
    text: str


class MemberHospitals(_Data):
    source: str
    names: tuple[str, ...]


class Recognition(_Data):
    override_reasons: tuple[OverrideReasonText, ...]
    member_hospitals: MemberHospitals


class CapabilityCode(_Sourced):
    code: Capability
    name: str
    meaning: str


class KindCapabilities(_Sourced):
    kind: Kind
    capabilities: tuple[Capability, ...]


class CapabilityGrant(_Sourced):
    institution: str
    capability: Capability


class TravelTime(_Sourced):
    between: tuple[str, str]
    minutes: int = Field(ge=1)
    distance_km: int | None = Field(default=None, ge=0)


class CandidateOrder(_Sourced):
    steps: tuple[Literal["own_chain", "prefecture_hospitals"], ...]


class Referral(_Data):
    capabilities: tuple[CapabilityCode, ...]
    by_kind: tuple[KindCapabilities, ...]
    institutions: tuple[CapabilityGrant, ...]
    travel: tuple[TravelTime, ...]
    candidate_order: CandidateOrder

    @model_validator(mode="after")
    def _complete(self) -> Referral:
        codes = [c.code for c in self.capabilities]
        if sorted(codes) != sorted(Capability):
            raise ValueError("referral.capabilities must list every Capability once")
        for row in self.by_kind:
            if row.kind not in CLINICAL_KINDS:
                raise ValueError(f"a {row.kind} takes no referrals")
        grants = [(g.institution, g.capability) for g in self.institutions]
        if len(grants) != len(set(grants)):
            raise ValueError("a capability is granted twice to the same institution")
        return self


class RefData(_Data):
    version: int
    prefecture: Prefecture
    facts: dict[str, Fact]
    levels: dict[Kind, Level]
    counties: tuple[County, ...]
    institutions: tuple[Institution, ...]
    recognition: Recognition
    referral: Referral | None = None

    @model_validator(mode="after")
    def _integrity(self) -> RefData:
        ids = [i.id for i in self.institutions]
        if len(ids) != len(set(ids)):
            raise ValueError("institution ids must be unique")
        by_id = {i.id: i for i in self.institutions}
        codes = {c.code for c in self.counties} | {self.prefecture.code}
        for inst in self.institutions:
            if inst.county not in codes:
                raise ValueError(f"{inst.id}: unknown county {inst.county}")
            wanted = PARENT_KINDS.get(inst.kind, ())
            parent = by_id.get(inst.parent) if inst.parent else None
            if wanted and (parent is None or parent.kind not in wanted):
                raise ValueError(f"{inst.id}: parent must be one of {wanted}")
            if not wanted and inst.parent is not None:
                raise ValueError(f"{inst.id}: a {inst.kind} has no parent")
            unknown = [s for s in inst.serves if s not in by_id]
            if unknown:
                raise ValueError(f"{inst.id}: serves unknown {unknown}")
        missing = set(Kind) - set(self.levels)
        if missing:
            raise ValueError(f"levels missing for {sorted(missing)}")
        if self.referral is not None:
            self._referral_integrity(by_id)
        return self

    def _referral_integrity(self, by_id: dict[str, Institution]) -> None:
        assert self.referral is not None
        for grant in self.referral.institutions:
            inst = by_id.get(grant.institution)
            if inst is None:
                raise ValueError(f"capability for unknown institution {grant.institution}")
            if inst.kind not in CLINICAL_KINDS:
                raise ValueError(f"{inst.id}: a {inst.kind} takes no referrals")
        for trip in self.referral.travel:
            a, b = trip.between
            if a == b or a not in by_id or b not in by_id:
                raise ValueError(f"travel between unknown or equal institutions {trip.between}")

    # --- look-ups ----------------------------------------------------------

    def institution(self, institution_id: str) -> Institution:
        for inst in self.institutions:
            if inst.id == institution_id:
                return inst
        raise KeyError(institution_id)

    def county(self, code: str) -> County:
        for county in self.counties:
            if county.code == code:
                return county
        raise KeyError(code)

    def level_of(self, institution_id: str) -> int:
        inst = self.institution(institution_id)
        return inst.level if inst.level is not None else self.levels[inst.kind].level

    def of_kind(self, kind: Kind | str) -> tuple[Institution, ...]:
        return tuple(i for i in self.institutions if i.kind == Kind(kind))

    def in_county(self, code: str) -> tuple[Institution, ...]:
        return tuple(i for i in self.institutions if i.county == code)

    def children(self, institution_id: str) -> tuple[Institution, ...]:
        return tuple(i for i in self.institutions if i.parent == institution_id)

    def total_hospital_for(self, institution_id: str) -> Institution:
        """The total hospital (总医院) an institution belongs to (itself if it is one)."""
        inst = self.institution(institution_id)
        while inst.kind is not Kind.total_hospital:
            if inst.parent is None:
                raise RefDataError(f"{institution_id} belongs to no total hospital")
            inst = self.institution(inst.parent)
        return inst

    def lab_centre_for(self, institution_id: str) -> Institution:
        """The lab centre that tests what this institution collects."""
        return self._centre_for(institution_id, Kind.lab_centre)

    def reading_centre_for(self, institution_id: str, modality: str) -> Institution:
        """The ECG or imaging centre that reads this institution's studies."""
        if modality not in MODALITY_CENTRE:
            raise ValueError(f"unknown modality {modality!r}")
        return self._centre_for(institution_id, MODALITY_CENTRE[modality])

    def _centre_for(self, institution_id: str, kind: Kind) -> Institution:
        self.institution(institution_id)
        centres = self.of_kind(kind)
        for centre in centres:  # an explicit assignment wins
            if institution_id in centre.serves:
                return centre
        home = self.total_hospital_for(institution_id)
        for centre in centres:
            if centre.parent == home.id:
                return centre
        raise RefDataError(f"no {kind} serves {institution_id}")

    # --- referral look-ups ---------------------------------------------------

    def _referral(self) -> Referral:
        if self.referral is None:
            raise RefDataError("the reference data has no referral section")
        return self.referral

    def capabilities_of(self, institution_id: str) -> frozenset[Capability]:
        """What an institution can take a referred patient for (empty for a centre)."""
        inst = self.institution(institution_id)
        ref = self._referral()
        caps = {c for row in ref.by_kind if row.kind == inst.kind for c in row.capabilities}
        caps.update(g.capability for g in ref.institutions if g.institution == institution_id)
        return frozenset(caps)

    def has_capability(self, institution_id: str, capability: Capability | str) -> bool:
        return Capability(capability) in self.capabilities_of(institution_id)

    def capability_sources(self, institution_id: str) -> dict[Capability, str]:
        """Why an institution has each capability: the source of its row."""
        inst = self.institution(institution_id)
        ref = self._referral()
        sources = {c: row.source for row in ref.by_kind if row.kind == inst.kind
                   for c in row.capabilities}
        sources.update({g.capability: g.source for g in ref.institutions
                        if g.institution == institution_id})
        return sources

    def travel_minutes(self, a: str, b: str) -> int | None:
        """Sourced travel time between two institutions, either way; None if unknown."""
        for trip in self._referral().travel:
            if set(trip.between) == {a, b}:
                return trip.minutes
        return None

    def upward_candidates(self, institution_id: str,
                          capability: Capability | str | None = None) -> tuple[Institution, ...]:
        """Where a patient from `institution_id` may be referred up to, with the
        capability if one is given, nearest first (`referral.candidate_order`).

        The steps: the sender's own chain upward (its township branch, then its
        total hospital), then the prefecture hospitals. Within a step, those
        with a sourced travel time come first, nearest first, then the others
        in data order; travel time reorders across steps only when it is
        sourced for every candidate.
        """
        sender = self.institution(institution_id)
        wanted = Capability(capability) if capability is not None else None
        steps: list[list[Institution]] = []
        for step in self._referral().candidate_order.steps:
            if step == "own_chain":
                chain: list[Institution] = []
                inst = sender
                while inst.parent is not None and inst.kind is not Kind.total_hospital:
                    inst = self.institution(inst.parent)
                    chain.append(inst)
                steps.append(chain)
            else:
                steps.append(list(self.of_kind(Kind.prefecture_hospital)))
        seen: set[str] = {sender.id}
        ordered: list[list[Institution]] = []
        for step_members in steps:
            keep = [i for i in step_members if i.id not in seen
                    and (wanted is None or wanted in self.capabilities_of(i.id))]
            seen.update(i.id for i in keep)
            ordered.append(keep)
        flat = [i for step_members in ordered for i in step_members]
        times = {i.id: self.travel_minutes(sender.id, i.id) for i in flat}
        if flat and all(t is not None for t in times.values()):
            return tuple(sorted(flat, key=lambda i: times[i.id]))  # stable: ties keep rule order

        def within(step_members: list[Institution]) -> list[Institution]:
            timed = sorted((i for i in step_members if times[i.id] is not None),
                           key=lambda i: times[i.id])
            return timed + [i for i in step_members if times[i.id] is None]

        return tuple(i for step_members in ordered for i in within(step_members))

    def override_reason_codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.recognition.override_reasons)


def parse(text: str) -> RefData:
    """Validate reference data given as YAML text."""
    raw: Any = yaml.safe_load(text)
    return RefData.model_validate(raw)


@cache
def load() -> RefData:
    """The packaged Changji reference data (read once)."""
    text = resources.files(__package__).joinpath("changji.yaml").read_text("utf-8")
    return parse(text)

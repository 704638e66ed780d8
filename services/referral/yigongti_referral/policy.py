"""The referral policy tables (policy/*.yaml), read once and typed. Every value
there carries its source; this module only reads and checks them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from importlib.resources import files
from typing import Any

import yaml
from yigongti_contracts.refdata import Capability

from .codes import ChronicClass, Direction, Urgency


def read(name: str) -> Any:
    return yaml.safe_load((files("yigongti_referral") / "policy" / name).read_text("utf-8"))


@dataclass(frozen=True)
class Transit:
    overdue: timedelta  # the in-transit alert
    lost: timedelta  # «not received within X hours of departure»


@dataclass(frozen=True)
class Validity:
    months: int
    admissions: int | None  # None: unlimited visits


@dataclass(frozen=True)
class Round:
    day: int
    missed_after: timedelta


@dataclass(frozen=True)
class Trigger:
    """A critical finding that suggests a referral to a capability."""

    finding: str
    modalities: frozenset[str]
    icd10: tuple[str, ...]
    codes: frozenset[str]
    capability: Capability
    urgency: Urgency

    def matches(self, modality: str, conclusion_code: str) -> bool:
        return modality in self.modalities and (
            conclusion_code in self.codes
            or any(conclusion_code.startswith(prefix) for prefix in self.icd10))


@dataclass(frozen=True)
class Policy:
    acceptance: dict[Urgency, timedelta]
    transit: dict[Urgency, Transit]
    not_closed: timedelta
    paperwork_reminder: timedelta
    request_grace: timedelta
    validity: Validity
    chronic_validity: dict[ChronicClass, Validity]
    rounds: tuple[Round, ...]
    reroute_directions: frozenset[Direction]
    reroute_at_once: frozenset[Urgency]
    alternative_first: bool
    triggers: tuple[Trigger, ...]

    def validity_for(self, chronic_class: ChronicClass | None) -> Validity:
        return self.validity if chronic_class is None else self.chronic_validity[chronic_class]

    def missed_after(self, day: int) -> timedelta:
        """Grace of a round: the first default round at or after `day`, else the last."""
        for r in self.rounds:
            if r.day >= day:
                return r.missed_after
        return self.rounds[-1].missed_after

    def trigger_for(self, modality: str, conclusion_code: str) -> Trigger | None:
        return next((t for t in self.triggers if t.matches(modality, conclusion_code)), None)


def _by_urgency(rows: list[dict[str, Any]], make: Any) -> dict[Urgency, Any]:
    table = {Urgency(r["urgency"]): make(r) for r in rows}
    if set(table) != set(Urgency) or len(rows) != len(Urgency):
        raise ValueError("a value per urgency, each once")
    return table


def _validity(row: dict[str, Any]) -> Validity:
    return Validity(months=int(row["months"]), admissions=row["admissions"])


@cache
def load_policy() -> Policy:
    deadlines = read("deadlines.yaml")
    validity = read("validity.yaml")
    follow_up = read("follow_up.yaml")
    rerouting = read("rerouting.yaml")
    suggestions = read("suggestions.yaml")
    chronic = {ChronicClass(r["code"]): _validity(r) for r in validity["chronic_classes"]}
    if set(chronic) != set(ChronicClass):
        raise ValueError("validity.yaml must give every chronic class")
    rounds = tuple(Round(int(r["day"]), timedelta(days=r["missed_after_days"]))
                   for r in follow_up["rounds"])
    if [r.day for r in rounds] != sorted({r.day for r in rounds}):
        raise ValueError("follow-up rounds must be distinct and in order")
    return Policy(
        acceptance=_by_urgency(deadlines["acceptance"], lambda r: timedelta(minutes=r["minutes"])),
        transit=_by_urgency(deadlines["transit"], lambda r: Transit(
            overdue=timedelta(minutes=r["overdue_minutes"]),
            lost=timedelta(hours=r["lost_hours"]))),
        not_closed=timedelta(days=deadlines["not_closed"]["days"]),
        paperwork_reminder=timedelta(hours=deadlines["paperwork_reminder"]["hours"]),
        request_grace=timedelta(hours=deadlines["request_grace"]["hours"]),
        validity=_validity(validity["default"]),
        chronic_validity=chronic,
        rounds=rounds,
        reroute_directions=frozenset(Direction(d) for d in rerouting["directions"]),
        reroute_at_once=frozenset(Urgency(u) for u in rerouting["at_once_urgencies"]),
        alternative_first=bool(rerouting["alternative_first"]),
        triggers=tuple(
            Trigger(finding=t["finding"], modalities=frozenset(t["modalities"]),
                    icd10=tuple(t["icd10"]), codes=frozenset(t["codes"]),
                    capability=Capability(t["capability"]), urgency=Urgency(t["urgency"]))
            for t in suggestions["triggers"]),
    )

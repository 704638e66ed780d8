"""Automatic ECG limits (policy/ecg_critical.yaml) and the priority they raise.

`breaches(measurements)` says which measurement is beyond which limit, as a code
and the limit; it never names a rhythm or a diagnosis (STEMI, AF, VT are the
reader's, DESIGN §5). `raised_priority(current, found)` can raise a study's
priority for a breach and never lowers it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from functools import cache
from importlib.resources import files

import yaml

from .measure import Measurements


class Priority(StrEnum):
    """Reading priority (DESIGN §5). Order: STAT > URGENT > ROUTINE."""

    STAT = "STAT"
    URGENT = "URGENT"
    ROUTINE = "ROUTINE"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Priority.ROUTINE: 0, Priority.URGENT: 1, Priority.STAT: 2}

COMPARATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
MEASUREMENT_FIELDS = frozenset(f.name for f in fields(Measurements))


@dataclass(frozen=True)
class Limit:
    code: str
    measurement: str
    comparator: str
    value: float
    unit: str
    source: str
    applies_to: str


@dataclass(frozen=True)
class Breach:
    """A measurement beyond a limit: the limit's code and the limit itself."""

    code: str
    measurement: str
    comparator: str
    limit: float
    unit: str


@dataclass(frozen=True)
class LimitPolicy:
    limits: tuple[Limit, ...]
    raises_to: Priority


@cache
def load_policy() -> LimitPolicy:
    data = yaml.safe_load((files("yigongti_diagnosis") / "policy" / "ecg_critical.yaml")
                          .read_text("utf-8"))
    limits = tuple(Limit(**{k: row[k] for k in Limit.__dataclass_fields__})
                   for row in data["limits"])
    for limit in limits:
        if limit.comparator not in COMPARATORS or limit.measurement not in MEASUREMENT_FIELDS:
            raise ValueError(f"ecg_critical.yaml: bad limit {limit.code}")
    return LimitPolicy(limits=limits, raises_to=Priority(data["raises_to"]))


def breaches(measurements: Measurements | Mapping[str, float | None],
             limits: Iterable[Limit] | None = None) -> list[Breach]:
    """The limits the measurements are beyond (a withheld figure breaches nothing)."""
    values = measurements.to_dict() if isinstance(measurements, Measurements) else measurements
    found = []
    for limit in load_policy().limits if limits is None else limits:
        value = values.get(limit.measurement)
        if value is not None and COMPARATORS[limit.comparator](value, limit.value):
            found.append(Breach(limit.code, limit.measurement, limit.comparator,
                                limit.value, limit.unit))
    return found


def raised_priority(current: Priority, found: Iterable[Breach],
                    raises_to: Priority | None = None) -> Priority:
    """The priority after the breaches: `raises_to` when there is one and it is
    higher, else `current`. Never lower than `current`."""
    if not list(found):
        return current
    target = load_policy().raises_to if raises_to is None else raises_to
    return max(current, target, key=lambda p: p.rank)

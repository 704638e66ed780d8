"""The on-duty roster for critical-value escalation (data in policy/oncall.yaml).

A critical value is first called to the clinic by the technologist on duty
(attempt 0); while no acknowledgement with read-back arrives, every
`escalation_interval()` the next person on the lab centre's roster is called
(escalation level n is attempt n), cycling through the roster until someone
acknowledges (DESIGN §5). `ordering_contact(attempt)` is who is asked for at
the ordering institution, cycling likewise.

Pure functions: the packaged YAML is read once (cached), nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from functools import cache
from importlib.resources import files
from typing import Any

import yaml


class Role(StrEnum):
    technologist_on_duty = "technologist_on_duty"  # 值班技师
    lab_physician = "lab_physician"  # 检验医师
    department_head = "department_head"  # 科室主任
    medical_affairs_office = "medical_affairs_office"  # 医务科


class OrderingRole(StrEnum):
    ordering_clinician = "ordering_clinician"
    clinic_duty_doctor = "clinic_duty_doctor"
    clinic_head = "clinic_head"


class UnknownLabCentre(KeyError):
    """No roster for this lab centre."""


@dataclass(frozen=True)
class RosterEntry:
    staff_id: str
    role: Role


@dataclass(frozen=True)
class _OnCall:
    interval: timedelta
    rosters: Mapping[str, tuple[RosterEntry, ...]]
    ordering_side: tuple[OrderingRole, ...]


@cache
def _oncall() -> _OnCall:
    raw: Any = yaml.safe_load((files("yigongti_lab") / "policy" / "oncall.yaml").read_text("utf-8"))
    rosters = {
        str(centre["lab_centre"]): tuple(RosterEntry(str(e["staff_id"]), Role(e["role"]))
                                         for e in centre["roster"])
        for centre in raw["lab_centres"]
    }
    if any(not roster for roster in rosters.values()):
        raise ValueError("every lab centre's roster names at least one person")
    return _OnCall(
        interval=timedelta(minutes=int(raw["escalation_interval_minutes"])),
        rosters=rosters,
        ordering_side=tuple(OrderingRole(r["role"]) for r in raw["ordering_side"]),
    )


def escalation_interval() -> timedelta:
    """How long an unacknowledged critical value waits before the next call (15 min)."""
    return _oncall().interval


def roster(lab_centre: str) -> tuple[RosterEntry, ...]:
    """The lab centre's escalation order."""
    try:
        return _oncall().rosters[lab_centre]
    except KeyError:
        raise UnknownLabCentre(lab_centre) from None


def who_next(lab_centre: str, attempt: int) -> RosterEntry:
    """Who makes call `attempt` (0: the technologist on duty; n ≥ 1: escalation
    level n), cycling through the roster."""
    if attempt < 0:
        raise ValueError("attempt counts from 0")
    entries = roster(lab_centre)
    return entries[attempt % len(entries)]


def ordering_side() -> tuple[OrderingRole, ...]:
    """Who is asked for at the ordering institution, in order."""
    return _oncall().ordering_side


def ordering_contact(attempt: int) -> OrderingRole:
    """Who call `attempt` asks for at the ordering institution, cycling."""
    if attempt < 0:
        raise ValueError("attempt counts from 0")
    side = ordering_side()
    return side[attempt % len(side)]

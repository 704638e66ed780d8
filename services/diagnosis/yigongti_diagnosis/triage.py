"""Triage (DESIGN §5): a request's priority, the reasons, and its due time, from
policy/triage.yaml and the ECG limits (ecg_limits.py). Pure functions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from functools import cache
from importlib.resources import files

import yaml
from yigongti_contracts.diagnosis.codes import Priority

from . import ecg_limits

RANK = {Priority.stat: 0, Priority.urgent: 1, Priority.routine: 2}  # worklist order


@cache
def policy() -> dict:
    return yaml.safe_load((files("yigongti_diagnosis") / "policy" / "triage.yaml")
                          .read_text("utf-8"))


def _matches(code: str, listed: Iterable[str]) -> bool:
    """"I63" covers "I63.9"; "R07.4" covers "R07.40"."""
    return any(code == c or code.startswith(c + ".") or ("." in c and code.startswith(c))
               for c in listed)


def priority_of(*, indications: Iterable[str], symptom_onset: datetime | None,
                clinician_priority: Priority | None, requested_at: datetime,
                measurements: Mapping | None = None) -> tuple[Priority, tuple[str, ...]]:
    """The priority and why (the reasons of the rules that set or raised it)."""
    p = policy()
    found: list[tuple[Priority, str]] = []
    codes = list(indications)
    if any(_matches(c, p["chest_pain"]["codes"]) for c in codes):
        window = timedelta(hours=p["chest_pain"]["stat_within_hours"])
        if symptom_onset is not None and requested_at - symptom_onset < window:
            found.append((Priority.stat, "chest_pain_under_12h"))
        else:
            found.append((Priority(p["chest_pain"]["otherwise"].lower()), "chest_pain"))
    if any(_matches(c, p["suspected_stroke"]["codes"]) for c in codes):
        found.append((Priority.stat, "suspected_stroke"))
    if any(_matches(c, p["urgent"]["codes"]) for c in codes):
        found.append((Priority.urgent, "urgent_indication"))
    if clinician_priority is not None:
        found.append((clinician_priority, f"clinician_{clinician_priority.value}"))
    if measurements:
        for breach in ecg_limits.breaches(measurements):
            raised = ecg_limits.load_policy().raises_to.value.lower()
            found.append((Priority(raised), f"ecg_{breach.code}"))
    if not found:
        return Priority.routine, ()
    # Never lowered: the highest wins; every reason for that priority is kept.
    top = min((pr for pr, _ in found), key=RANK.__getitem__)
    return top, tuple(dict.fromkeys(reason for pr, reason in found if pr is top))


def due_after(centre: str, priority: Priority) -> timedelta:
    table = policy()["due_minutes"]
    row = table.get(centre, table["default"])
    return timedelta(minutes=row[priority.value.upper()])


def lease() -> timedelta:
    return timedelta(minutes=policy()["lease_minutes"])

"""Specimen stability and acceptance at receipt (data in policy/stability.yaml).

The stability table is keyed by test × tube × processing state × temperature
class and gives the longest time from collection to receipt. A tube carrying
several tests is as stable as its least stable test (`limit`, `limiting`). A
tube centrifuged before dispatch must have been centrifuged within its
whole-blood limit, and then arrive within its centrifuged limit, both counted
from collection (`stability_window`).

`temperature_excursion` reads the transport box's logger (contracts
`LoggerReadout`) against the temperature class's band; `rejection_reasons`
maps an `Inspection` plus timings and logger to the contract's
`RejectionReason`s, in the contract's order.

Pure functions: the packaged YAML is read once (cached), nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import cache
from importlib.resources import files
from typing import Any

import yaml
from yigongti_contracts.lab.codes import ProcessingState, RejectionReason, TubeType
from yigongti_contracts.lab.parts import Inspection, LoggerReadout

from .catalogue import decimal_of, lookup


class TemperatureClass(StrEnum):
    room = "room"  # 18–25 °C
    refrigerated = "refrigerated"  # 2–8 °C
    frozen = "frozen"  # −20 °C or colder


class NoStabilityData(LookupError):
    """The stability table has no row for this test in this tube."""


@dataclass(frozen=True)
class Band:
    """A temperature class: its band, how long the logger may show the box
    outside it, and hard limits beyond which any reading is an excursion."""

    temperature_class: TemperatureClass
    min_celsius: Decimal | None
    max_celsius: Decimal | None
    max_minutes_outside: int
    hard_min_celsius: Decimal | None = None
    hard_max_celsius: Decimal | None = None


@dataclass(frozen=True)
class StabilityWindow:
    """Until when a tube is stable, and which test and state set that time."""

    limiting_test: str
    processing_state: ProcessingState
    stable_until: datetime


@dataclass(frozen=True)
class _Policy:
    limits: Mapping[tuple[str, TubeType, ProcessingState, TemperatureClass], int]
    bands: Mapping[TemperatureClass, Band]
    transport_default: TemperatureClass
    transport_by_tube: Mapping[TubeType, TemperatureClass]
    free_hb_g_per_l: Decimal
    triglyceride_g_per_l: Mapping[ProcessingState, Decimal]


def _optional(raw: Any) -> Decimal | None:
    return None if raw is None else decimal_of(raw)


@cache
def _policy() -> _Policy:
    raw = yaml.safe_load((files("yigongti_lab") / "policy" / "stability.yaml").read_text("utf-8"))
    limits: dict[tuple[str, TubeType, ProcessingState, TemperatureClass], int] = {}
    for group in raw["groups"]:
        for test in group["tests"]:
            for tube in group["tubes"]:
                for row in group["limits"]:
                    key = (test, TubeType(tube), ProcessingState(row["state"]),
                           TemperatureClass(row["temperature"]))
                    if key in limits:
                        raise ValueError(f"stability row {key} given twice")
                    limits[key] = int(row["minutes"])
    bands = {
        TemperatureClass(b["class"]): Band(
            TemperatureClass(b["class"]), _optional(b["min_celsius"]), _optional(b["max_celsius"]),
            int(b["max_minutes_outside"]), _optional(b.get("hard_min_celsius")),
            _optional(b.get("hard_max_celsius")))
        for b in raw["temperature_classes"]
    }
    transport = raw["transport_class"]
    return _Policy(
        limits=limits,
        bands=bands,
        transport_default=TemperatureClass(transport["default"]),
        transport_by_tube={TubeType(t): TemperatureClass(c)
                           for t, c in (transport.get("by_tube") or {}).items()},
        free_hb_g_per_l=decimal_of(raw["haemolysis"]["free_hb_g_per_l"]),
        triglyceride_g_per_l={ProcessingState(s): decimal_of(v)
                              for s, v in raw["lipaemia"]["triglyceride_g_per_l"].items()},
    )


# --- the stability table ----------------------------------------------------------


def limiting(test_codes: Sequence[str], tube: TubeType, processing_state: ProcessingState,
             temperature_class: TemperatureClass) -> tuple[str, int]:
    """The least stable of the tube's tests and its limit in minutes (the first
    listed on a tie). Raises `NoStabilityData` for a test without a row."""
    if not test_codes:
        raise ValueError("a tube carries at least one test")
    limits = _policy().limits
    found: list[tuple[int, str]] = []
    for code in test_codes:
        key = (code, TubeType(tube), ProcessingState(processing_state),
               TemperatureClass(temperature_class))
        if key not in limits:
            raise NoStabilityData(f"no stability data for {code} in {tube}")
        found.append((limits[key], code))
    minutes, code = min(found, key=lambda pair: pair[0])
    return code, minutes


def limit(test_codes: Sequence[str], tube: TubeType, processing_state: ProcessingState,
          temperature_class: TemperatureClass) -> int:
    """Minutes from collection to receipt the tube may take: the strictest over its
    tests (0: never acceptable in that state and temperature)."""
    return limiting(test_codes, tube, processing_state, temperature_class)[1]


def transport_class(tube: TubeType) -> TemperatureClass:
    """The temperature class a tube travels in (2–8 °C except blood cultures)."""
    policy = _policy()
    return policy.transport_by_tube.get(TubeType(tube), policy.transport_default)


def stability_window(collected_at: datetime, test_codes: Sequence[str], tube: TubeType,
                     temperature_class: TemperatureClass | None = None,
                     centrifuged_at: datetime | None = None) -> StabilityWindow:
    """Until when the tube may arrive. Uncentrifuged: collection + whole-blood
    limit. Centrifuged in time (within the whole-blood limit): collection +
    centrifuged limit; centrifuged too late: the whole-blood limit has passed."""
    cls = transport_class(tube) if temperature_class is None else temperature_class
    whole_test, whole = limiting(test_codes, tube, ProcessingState.whole_blood, cls)
    whole_until = collected_at + timedelta(minutes=whole)
    if centrifuged_at is None or centrifuged_at > whole_until:
        return StabilityWindow(whole_test, ProcessingState.whole_blood, whole_until)
    spun_test, spun = limiting(test_codes, tube, ProcessingState.centrifuged, cls)
    return StabilityWindow(spun_test, ProcessingState.centrifuged,
                           collected_at + timedelta(minutes=spun))


def transport_exceeded(collected_at: datetime, received_at: datetime,
                       test_codes: Sequence[str], tube: TubeType,
                       temperature_class: TemperatureClass | None = None,
                       centrifuged_at: datetime | None = None) -> bool:
    """True when the tube arrived after its stability limit (arriving exactly at the
    limit is in time)."""
    window = stability_window(collected_at, test_codes, tube, temperature_class, centrifuged_at)
    return received_at > window.stable_until


# --- temperature ----------------------------------------------------------------------


def band(temperature_class: TemperatureClass) -> Band:
    return _policy().bands[TemperatureClass(temperature_class)]


def temperature_excursion(readout: LoggerReadout, temperature_class: TemperatureClass) -> bool:
    """True when the logger shows the box outside the class's band for longer than
    the class tolerates (`minutes_outside_band`, as the logger counts it against
    that band), or any reading beyond the class's hard limits (frozen in the
    fridge box, thawed in the freezer box)."""
    b = band(temperature_class)
    if b.hard_min_celsius is not None and readout.min_celsius < b.hard_min_celsius:
        return True
    if b.hard_max_celsius is not None and readout.max_celsius > b.hard_max_celsius:
        return True
    return readout.minutes_outside_band > b.max_minutes_outside


# --- inspection at receipt -----------------------------------------------------------------


def haemolysed(free_hb_g_per_l: Decimal) -> bool:
    """Serum or plasma free haemoglobin above the threshold (1.0 g/L)."""
    return free_hb_g_per_l > _policy().free_hb_g_per_l


def lipaemic(triglyceride_g_per_l: Decimal, processing_state: ProcessingState) -> bool:
    """Gross lipaemia: triglyceride above 10 g/L in whole blood, 3 g/L in serum."""
    return triglyceride_g_per_l > _policy().triglyceride_g_per_l[ProcessingState(processing_state)]


def rejection_reasons(
    inspection: Inspection,
    free_hb: Decimal | None = None,
    *,
    tests: Sequence[str],
    tube: TubeType,
    collected_at: datetime,
    received_at: datetime,
    centrifuged_at: datetime | None = None,
    logger: LoggerReadout | None = None,
    temperature_class: TemperatureClass | None = None,
    triglyceride_g_per_l: Decimal | None = None,
    labelled: bool = True,
) -> tuple[RejectionReason, ...]:
    """Every reason to reject the tube, in the order of `RejectionReason` (empty:
    accept).

    - haemolysed: the inspector says so, or free haemoglobin (`free_hb`, else the
      inspection's) is above 1.0 g/L;
    - lipaemic: the inspector says so, or the triglyceride is above the limit for
      the tube's processing state;
    - clotted, insufficient_volume: from the inspection;
    - wrong_tube: the inspector says so, or a test's catalogue tube is another;
    - unlabelled (`labelled` False), else label_mismatch (`label_matches` False);
    - transport_time_exceeded: received after the stability window (tests without
      a row for this tube are already wrong_tube and are left out of the window);
    - temperature_excursion: the logger (if read) against the tube's temperature
      class (`temperature_class`, default the tube's transport class).
    """
    found: set[RejectionReason] = set()
    hb = inspection.free_haemoglobin_g_per_l if free_hb is None else free_hb
    if not inspection.not_haemolysed or (hb is not None and haemolysed(hb)):
        found.add(RejectionReason.haemolysed)
    state = ProcessingState.whole_blood if centrifuged_at is None else ProcessingState.centrifuged
    if not inspection.not_lipaemic or (
            triglyceride_g_per_l is not None and lipaemic(triglyceride_g_per_l, state)):
        found.add(RejectionReason.lipaemic)
    if not inspection.not_clotted:
        found.add(RejectionReason.clotted)
    if not inspection.volume_sufficient:
        found.add(RejectionReason.insufficient_volume)
    if not inspection.right_tube or any(lookup(code).tube != tube for code in tests):
        found.add(RejectionReason.wrong_tube)
    if not labelled:
        found.add(RejectionReason.unlabelled)
    elif not inspection.label_matches:
        found.add(RejectionReason.label_mismatch)
    cls = transport_class(tube) if temperature_class is None else temperature_class
    limits = _policy().limits
    timed = [code for code in tests
             if (code, TubeType(tube), ProcessingState.whole_blood, cls) in limits]
    if timed and transport_exceeded(collected_at, received_at, timed, tube, cls, centrifuged_at):
        found.add(RejectionReason.transport_time_exceeded)
    if logger is not None and temperature_excursion(logger, cls):
        found.add(RejectionReason.temperature_excursion)
    return tuple(reason for reason in RejectionReason if reason in found)

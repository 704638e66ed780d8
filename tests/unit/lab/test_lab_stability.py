"""Specimen stability, transport time, temperature excursions and the rejection
reasons at receipt (policy/stability.yaml)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from yigongti_contracts.lab.codes import ProcessingState, RejectionReason, TubeType
from yigongti_contracts.lab.parts import Inspection, LoggerReadout
from yigongti_lab.stability import (
    NoStabilityData,
    TemperatureClass,
    band,
    haemolysed,
    limit,
    limiting,
    lipaemic,
    rejection_reasons,
    stability_window,
    temperature_excursion,
    transport_class,
    transport_exceeded,
)

D = Decimal
WB, SPUN = ProcessingState.whole_blood, ProcessingState.centrifuged
ROOM, FRIDGE, FROZEN = TemperatureClass.room, TemperatureClass.refrigerated, TemperatureClass.frozen
T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


# --- the table ------------------------------------------------------------------------


@pytest.mark.parametrize(("tests", "tube", "state", "cls", "minutes"), [
    (["NH3"], TubeType.lithium_heparin, WB, ROOM, 15),
    (["NH3"], TubeType.lithium_heparin, WB, FRIDGE, 60),        # on ice < 1 h
    (["BG"], TubeType.lithium_heparin, WB, ROOM, 15),
    (["LAC"], TubeType.fluoride_oxalate, WB, ROOM, 15),
    (["K"], TubeType.serum_gold, WB, ROOM, 30),
    (["K"], TubeType.serum_gold, WB, FRIDGE, 30),
    (["K"], TubeType.serum_gold, SPUN, ROOM, 120),
    (["K"], TubeType.serum_gold, SPUN, FRIDGE, 7 * 1440),
    (["GLU"], TubeType.serum_gold, WB, ROOM, 30),              # no fluoride
    (["GLU"], TubeType.fluoride_oxalate, WB, ROOM, 120),
    (["NA"], TubeType.serum_gold, WB, FRIDGE, 120),
    (["NA"], TubeType.serum_gold, SPUN, ROOM, 1440),
    (["PT"], TubeType.sodium_citrate, WB, FRIDGE, 240),
    (["PT"], TubeType.sodium_citrate, SPUN, ROOM, 1440),
    (["APTT"], TubeType.sodium_citrate, SPUN, ROOM, 240),
    (["APTT"], TubeType.sodium_citrate, SPUN, FROZEN, 14 * 1440),
    (["CBC"], TubeType.edta_k2, WB, ROOM, 480),
    (["CBC"], TubeType.edta_k2, WB, FRIDGE, 1440),
    (["CBC"], TubeType.edta_k2, SPUN, ROOM, 0),
    (["BCULT"], TubeType.blood_culture, WB, ROOM, 1440),
    (["BCULT"], TubeType.blood_culture, WB, FRIDGE, 0),         # never refrigerated
    (["K"], TubeType.serum_gold, WB, FROZEN, 0),
])
def test_limit(tests, tube, state, cls, minutes):
    assert limit(tests, tube, state, cls) == minutes


@pytest.mark.parametrize(("tests", "state", "cls", "expected"), [
    (["NA", "CREA", "K", "ALT"], WB, FRIDGE, ("K", 30)),
    (["NA", "CREA", "ALT"], WB, FRIDGE, ("NA", 120)),
    (["CTNI", "CKMB"], WB, ROOM, ("CKMB", 30)),
    (["NA", "K"], SPUN, ROOM, ("K", 120)),
    (["NA", "K"], SPUN, FRIDGE, ("NA", 10080)),                 # tie: the first listed
])
def test_strictest_over_a_multi_test_tube(tests, state, cls, expected):
    assert limiting(tests, TubeType.serum_gold, state, cls) == expected
    assert limit(tests, TubeType.serum_gold, state, cls) == expected[1]


def test_citrate_tube_with_pt_and_aptt_takes_aptt_when_spun():
    assert limiting(["PT", "INR", "APTT"], TubeType.sodium_citrate, SPUN, ROOM) == ("APTT", 240)


def test_no_row_for_the_tube_raises():
    with pytest.raises(NoStabilityData):
        limit(["K"], TubeType.edta_k2, WB, ROOM)
    with pytest.raises(ValueError):
        limit([], TubeType.serum_gold, WB, ROOM)


def test_transport_class():
    assert transport_class(TubeType.serum_gold) is FRIDGE
    assert transport_class(TubeType.edta_k2) is FRIDGE
    assert transport_class(TubeType.blood_culture) is ROOM


# --- transport time ------------------------------------------------------------------


@pytest.mark.parametrize(("tests", "tube", "received_after", "exceeded"), [
    (["K"], TubeType.serum_gold, 30 * MIN, False),              # at the limit: in time
    (["K"], TubeType.serum_gold, 31 * MIN, True),
    (["K", "NA"], TubeType.serum_gold, 31 * MIN, True),         # K sets the limit
    (["NA"], TubeType.serum_gold, 119 * MIN, False),
    (["NA"], TubeType.serum_gold, 121 * MIN, True),
    (["CBC"], TubeType.edta_k2, 24 * 60 * MIN, False),          # refrigerated box
    (["CBC"], TubeType.edta_k2, 24 * 60 * MIN + MIN, True),
    (["NH3"], TubeType.lithium_heparin, 61 * MIN, True),
    (["PT"], TubeType.sodium_citrate, 4 * 60 * MIN, False),
    (["BCULT"], TubeType.blood_culture, 23 * 60 * MIN, False),  # room box
])
def test_transport_exceeded_uncentrifuged(tests, tube, received_after, exceeded):
    assert transport_exceeded(T0, T0 + received_after, tests, tube) is exceeded


def test_a_tube_spun_in_time_keeps_its_centrifuged_limit():
    spun = T0 + 20 * MIN
    window = stability_window(T0, ["K", "NA"], TubeType.serum_gold, centrifuged_at=spun)
    assert window.processing_state is SPUN and window.limiting_test == "K"  # tie: first listed
    assert window.stable_until == T0 + timedelta(days=7)
    assert not transport_exceeded(T0, T0 + timedelta(hours=5), ["K", "NA"], TubeType.serum_gold,
                                  centrifuged_at=spun)


def test_a_tube_spun_after_its_whole_blood_limit_is_late():
    spun = T0 + 31 * MIN
    window = stability_window(T0, ["K"], TubeType.serum_gold, centrifuged_at=spun)
    assert window.processing_state is WB and window.stable_until == T0 + 30 * MIN
    assert transport_exceeded(T0, T0 + 40 * MIN, ["K"], TubeType.serum_gold, centrifuged_at=spun)


def test_a_spun_edta_tube_is_never_acceptable():
    assert transport_exceeded(T0, T0 + MIN, ["CBC"], TubeType.edta_k2, centrifuged_at=T0 + MIN)


def test_overdue_window_names_the_limiting_test():
    window = stability_window(T0, ["CTNI", "K"], TubeType.serum_gold, FRIDGE)
    assert (window.limiting_test, window.processing_state) == ("K", WB)
    assert window.stable_until == T0 + 30 * MIN


# --- temperature ---------------------------------------------------------------------


def readout(lo: str, hi: str, minutes: int) -> LoggerReadout:
    return LoggerReadout(logger_id="LOG-17", min_celsius=D(lo), max_celsius=D(hi),
                         minutes_outside_band=minutes)


@pytest.mark.parametrize(("lo", "hi", "minutes", "cls", "excursion"), [
    ("3.1", "6.8", 0, FRIDGE, False),
    ("2", "8", 0, FRIDGE, False),
    ("1.5", "9.5", 30, FRIDGE, False),         # outside, within the tolerance
    ("1.5", "9.5", 31, FRIDGE, True),
    ("-0.1", "5", 1, FRIDGE, True),            # below 0 °C: frozen, however briefly
    ("0", "5", 1, FRIDGE, False),
    ("19", "24", 0, ROOM, False),
    ("12", "24", 31, ROOM, True),
    ("-30", "-21", 0, FROZEN, False),
    ("-30", "-15", 15, FROZEN, False),
    ("-30", "-15", 16, FROZEN, True),
    ("-30", "0.5", 5, FROZEN, True),           # thawed
])
def test_temperature_excursion(lo, hi, minutes, cls, excursion):
    assert temperature_excursion(readout(lo, hi, minutes), cls) is excursion


def test_bands():
    assert (band(FRIDGE).min_celsius, band(FRIDGE).max_celsius) == (D("2"), D("8"))
    assert (band(ROOM).min_celsius, band(ROOM).max_celsius) == (D("18"), D("25"))
    assert band(FROZEN).max_celsius == D("-20") and band(FROZEN).min_celsius is None


# --- haemolysis and lipaemia -------------------------------------------------------------


@pytest.mark.parametrize(("free_hb", "expected"), [("0.99", False), ("1.0", False), ("1.01", True)])
def test_haemolysis_threshold(free_hb, expected):
    assert haemolysed(D(free_hb)) is expected


@pytest.mark.parametrize(("tg", "state", "expected"), [
    ("3", SPUN, False), ("3.01", SPUN, True), ("10", WB, False), ("10.01", WB, True),
])
def test_lipaemia_threshold(tg, state, expected):
    assert lipaemic(D(tg), state) is expected


# --- rejection reasons ---------------------------------------------------------------------

GOOD = dict(not_haemolysed=True, not_lipaemic=True, not_clotted=True, volume_sufficient=True,
            right_tube=True, label_matches=True)


def inspection(**changes) -> Inspection:
    return Inspection(**{**GOOD, **changes})


def reasons(insp: Inspection | None = None, **kwargs) -> tuple[RejectionReason, ...]:
    args = dict(tests=["K", "NA"], tube=TubeType.serum_gold, collected_at=T0,
                received_at=T0 + 20 * MIN)
    args.update(kwargs)
    return rejection_reasons(insp or inspection(), **args)


def test_a_good_tube_has_no_reason():
    assert reasons() == ()
    assert reasons(logger=readout("3", "7", 0)) == ()


@pytest.mark.parametrize(("insp", "kwargs", "expected"), [
    (inspection(not_haemolysed=False), {}, RejectionReason.haemolysed),
    (inspection(free_haemoglobin_g_per_l=D("1.2")), {}, RejectionReason.haemolysed),
    (inspection(), {"free_hb": D("1.01")}, RejectionReason.haemolysed),
    (inspection(not_lipaemic=False), {}, RejectionReason.lipaemic),
    (inspection(), {"triglyceride_g_per_l": D("10.5")}, RejectionReason.lipaemic),
    (inspection(), {"triglyceride_g_per_l": D("3.5"), "centrifuged_at": T0 + 10 * MIN},
     RejectionReason.lipaemic),
    (inspection(not_clotted=False), {}, RejectionReason.clotted),
    (inspection(volume_sufficient=False), {}, RejectionReason.insufficient_volume),
    (inspection(right_tube=False), {}, RejectionReason.wrong_tube),
    (inspection(), {"tests": ["K", "CBC"]}, RejectionReason.wrong_tube),
    (inspection(), {"labelled": False}, RejectionReason.unlabelled),
    (inspection(label_matches=False), {}, RejectionReason.label_mismatch),
    (inspection(), {"received_at": T0 + 31 * MIN}, RejectionReason.transport_time_exceeded),
    (inspection(), {"logger": readout("1", "12", 45)}, RejectionReason.temperature_excursion),
])
def test_each_rejection_reason(insp, kwargs, expected):
    assert reasons(insp, **kwargs) == (expected,)


def test_within_limits_is_not_a_reason():
    assert reasons(inspection(free_haemoglobin_g_per_l=D("1.0"))) == ()
    assert reasons(triglyceride_g_per_l=D("3.5")) == ()            # whole blood: 10 g/L
    assert reasons(received_at=T0 + 30 * MIN) == ()
    assert reasons(logger=readout("1", "9", 30)) == ()


def test_unlabelled_is_not_also_a_mismatch():
    assert reasons(inspection(label_matches=False), labelled=False) == (
        RejectionReason.unlabelled,)


def test_reasons_come_in_the_contracts_order():
    got = reasons(
        inspection(not_haemolysed=False, not_lipaemic=False, not_clotted=False,
                   volume_sufficient=False, right_tube=False, label_matches=False),
        received_at=T0 + 3 * 60 * MIN, logger=readout("-1", "20", 90),
    )
    assert got == tuple(r for r in RejectionReason if r is not RejectionReason.unlabelled)


def test_blood_culture_in_a_refrigerated_box_is_an_excursion():
    got = reasons(tests=["BCULT"], tube=TubeType.blood_culture, logger=readout("3", "7", 60))
    assert got == (RejectionReason.temperature_excursion,)


def test_the_given_temperature_class_overrides_the_tube_default():
    # a serum tube in the room box: K still 30 min, NA 2 h; the room logger is fine
    got = reasons(tests=["NA"], received_at=T0 + 100 * MIN, temperature_class=ROOM,
                  logger=readout("19", "24", 0))
    assert got == ()


def test_a_test_in_a_tube_without_stability_data_is_wrong_tube_not_an_error():
    got = reasons(tests=["CBC"], tube=TubeType.serum_gold, received_at=T0 + 10 * 60 * MIN)
    assert got == (RejectionReason.wrong_tube,)

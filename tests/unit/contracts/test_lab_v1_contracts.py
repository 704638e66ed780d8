"""Lab v1 contract rules: what a valid record is (DESIGN §4–§5)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError
from yigongti_contracts.examples import EXAMPLES
from yigongti_contracts.lab import v1
from yigongti_contracts.lab.codes import OverrideReason, RejectionReason, TubeType
from yigongti_contracts.lab.parts import AnalyserObservation, Observation


def payload(model: type) -> dict[str, Any]:
    return EXAMPLES[model].model_dump(mode="json")


def valid(model: type, **over: Any):
    return model.model_validate({**payload(model), **over})


def invalid(model: type, **over: Any) -> None:
    with pytest.raises(ValidationError):
        valid(model, **over)


def test_the_seven_override_reasons() -> None:
    assert [r.value for r in OverrideReason] == [
        "condition_changed", "rapidly_changing", "major_procedure", "emergency",
        "patient_request", "forensic_assessment", "other_clinical_need",
    ]


def test_the_rejection_reasons() -> None:
    assert {r.value for r in RejectionReason} == {
        "haemolysed", "lipaemic", "clotted", "insufficient_volume", "wrong_tube",
        "unlabelled", "label_mismatch", "transport_time_exceeded", "temperature_excursion",
    }


def test_tube_types() -> None:
    assert {t.value for t in TubeType} == {
        "serum_gold", "lithium_heparin", "edta_k2", "sodium_citrate", "fluoride_oxalate",
        "blood_culture", "urine",
    }


def test_order_needs_tests_each_once() -> None:
    invalid(v1.LabOrderPlaced, tests=[])
    invalid(v1.LabOrderPlaced, tests=[{"code": "CBC"}, {"code": "CBC"}])
    invalid(v1.LabOrderPlaced, tests=[{"code": "CBC", "override_reason": "doctor_said_so"}])
    invalid(v1.LabOrderPlaced, tests=[{"code": "血常规"}])
    invalid(v1.LabOrderPlaced, priority="asap")
    invalid(v1.LabOrderPlaced, indications=["chest pain"])


def test_order_carries_sex_and_age_never_birth_date() -> None:
    invalid(v1.LabOrderPlaced, birth_date="1945-01-15")
    invalid(v1.LabOrderPlaced, age={"value": 400, "unit": "days"})
    assert valid(v1.LabOrderPlaced, age={"value": 20, "unit": "days"}).age.value == 20


def test_collection_times_and_recollection() -> None:
    invalid(v1.SpecimenCollected, centrifuged_at="2025-01-15T01:00:00Z")
    invalid(v1.SpecimenCollected, recollection_of=payload(v1.SpecimenCollected)["barcode"])
    invalid(v1.SpecimenCollected, tests=["2823-3", "2823-3"])
    invalid(v1.SpecimenCollected, collected_at="2025-01-15T02:05:00")  # naive
    assert valid(v1.SpecimenCollected, centrifuged_at=None).centrifuged_at is None


def test_dispatch_lists_each_barcode_once() -> None:
    invalid(v1.SpecimenDispatched, barcodes=[])
    invalid(v1.SpecimenDispatched, barcodes=["T1234", "T1234"])


def test_cancellation_of_whole_order_or_listed_tests() -> None:
    assert valid(v1.LabOrderCancelled, tests=None).tests is None
    invalid(v1.LabOrderCancelled, tests=[])
    invalid(v1.LabOrderCancelled, reason="changed my mind")


def test_accepted_order_splits_tests_and_avoided_duplicates() -> None:
    all_avoided = valid(v1.LabOrderAccepted, tests=[], avoided_tests=["2823-3"])
    assert all_avoided.tests == ()
    invalid(v1.LabOrderAccepted, tests=[], avoided_tests=[])
    invalid(v1.LabOrderAccepted, tests=["2823-3"], avoided_tests=["2823-3"])


def test_recognised_result_window_is_forward() -> None:
    reused = payload(v1.DuplicateTestAvoided)["recognised"]
    invalid(v1.DuplicateTestAvoided, recognised={**reused, "valid_until": reused["verified_at"]})


@pytest.mark.parametrize("over,ok", [
    ({}, True),
    ({"value": None}, False),  # neither value nor coded value
    ({"coded_value": "POS"}, False),  # both
    ({"unit": None}, False),  # numeric without unit
    ({"value": None, "unit": None, "coded_value": "2+"}, True),
    ({"value": None, "unit": None, "coded_value": "NEG", "comparator": "<"}, False),
    ({"comparator": "<"}, True),
    ({"value": 2.35}, False),  # floats never
])
def test_result_value_is_numeric_with_unit_or_coded(over: dict, ok: bool) -> None:
    base = {"code": "89579-7", "value": "2.35", "unit": "ng/mL"}
    if ok:
        AnalyserObservation.model_validate({**base, **over})
    else:
        with pytest.raises(ValidationError):
            AnalyserObservation.model_validate({**base, **over})


def test_observation_has_range_and_flags() -> None:
    obs = Observation.model_validate(payload(v1.LabResultsReported)["observations"][0])
    assert obs.flag.value == "H" and obs.critical
    with pytest.raises(ValidationError):
        Observation.model_validate({**obs.model_dump(mode="json"), "flag": "HH"})
    assert obs.model_dump(mode="json")["value"] == "2.35"


def test_rejection_reasons_are_codes_each_once() -> None:
    invalid(v1.SpecimenRejected, reasons=[])
    invalid(v1.SpecimenRejected, reasons=["clotted", "clotted"])
    invalid(v1.SpecimenRejected, reasons=["broken"])
    assert valid(v1.SpecimenRejected, reasons=["haemolysed", "transport_time_exceeded"])


def test_call_back_names_who_answered_exactly_when_someone_did() -> None:
    invalid(v1.CriticalValueCallBackRecorded, reached=None)
    invalid(v1.CriticalValueCallBackRecorded, outcome="unable_to_reach")
    assert valid(v1.CriticalValueCallBackRecorded, outcome="unable_to_reach", reached=None)
    assert valid(v1.CriticalValueCallBackRecorded, outcome="reached_no_read_back")


def test_critical_value_is_numeric_or_coded() -> None:
    invalid(v1.CriticalValueRaised, value=None)
    invalid(v1.CriticalValueRaised, unit=None)
    assert valid(v1.CriticalValueRaised, value=None, unit=None, coded_value="POS",
                 direction="abnormal")


def test_escalation_levels_start_at_one() -> None:
    invalid(v1.CriticalValueEscalated, level=0)
    invalid(v1.LabReportAmended, revision=1)


def test_charges_add_up_and_use_policy_categories() -> None:
    posted = valid(v1.ChargesPosted, quantity=3, unit_price="6.5", amount="19.50")
    assert posted.model_dump(mode="json")["amount"] == "19.50"
    invalid(v1.ChargesPosted, quantity=3, unit_price="6.50", amount="19.49")
    invalid(v1.ChargesPosted, policy_category="甲")
    invalid(v1.ChargesPosted, unit_price=6.5, amount=6.5)
    invalid(v1.ChargesReversed, amount="-6.00")
    assert valid(v1.ChargesPosted).unit_price == Decimal("6.00")

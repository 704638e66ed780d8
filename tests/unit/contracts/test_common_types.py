"""Shared contract types: money, times, ages, ids, IntakeRejected and field errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import BaseModel, ValidationError
from yigongti_contracts.base import StrictModel
from yigongti_contracts.common import (
    Age,
    AgeUnit,
    FieldError,
    Identifier,
    InstitutionId,
    IntakeRejected,
    Money,
    PatientRef,
    Quantity,
    UtcDateTime,
    field_errors,
)


class Bill(BaseModel):
    amount: Money


class Reading(BaseModel):
    value: Quantity


class Stamp(BaseModel):
    at: UtcDateTime


class Ids(BaseModel):
    id: Identifier | None = None
    institution: InstitutionId | None = None
    patient: PatientRef | None = None


@pytest.mark.parametrize("raw,text", [
    ("12.5", "12.50"), ("0", "0.00"), (Decimal("1234.56"), "1234.56"), (7, "7.00"),
    ("9999999999.99", "9999999999.99"),
])
def test_money_is_two_places_and_a_string_on_the_wire(raw, text: str) -> None:
    bill = Bill(amount=raw)
    assert bill.amount == Decimal(text)
    assert json.loads(bill.model_dump_json()) == {"amount": text}
    assert Bill.model_validate_json(bill.model_dump_json()) == bill


@pytest.mark.parametrize("raw", [12.5, "12.345", "-1.00", "NaN", "Infinity", "1e3x", True,
                                 "10000000000.00"])
def test_money_refuses_floats_negative_and_sub_cent(raw) -> None:
    with pytest.raises(ValidationError):
        Bill(amount=raw)


def test_money_refuses_json_numbers() -> None:
    with pytest.raises(ValidationError):
        Bill.model_validate_json('{"amount": 12.5}')


def test_money_schema_is_a_string() -> None:
    schema = Bill.model_json_schema()["properties"]["amount"]
    assert schema["type"] == "string" and "pattern" in schema


@pytest.mark.parametrize("raw,text", [("4.50", "4.50"), ("-0.3", "-0.3"), ("120", "120"),
                                      ("0.000001", "0.000001")])
def test_quantities_keep_their_written_precision(raw: str, text: str) -> None:
    assert json.loads(Reading(value=raw).model_dump_json()) == {"value": text}


@pytest.mark.parametrize("raw", [1.5, "0.0000001", "abc", "NaN"])
def test_quantities_refuse_floats_and_excess_precision(raw) -> None:
    with pytest.raises(ValidationError):
        Reading(value=raw)


def test_times_are_aware_and_stored_in_utc() -> None:
    beijing = timezone(timedelta(hours=8))
    stamp = Stamp(at=datetime(2025, 1, 15, 10, 0, tzinfo=beijing))
    assert stamp.at == datetime(2025, 1, 15, 2, 0, tzinfo=UTC) and stamp.at.tzinfo is UTC
    assert json.loads(stamp.model_dump_json()) == {"at": "2025-01-15T02:00:00Z"}


@pytest.mark.parametrize("raw", [datetime(2025, 1, 15, 2, 0), "2025-01-15T02:00:00"])
def test_naive_times_are_refused(raw) -> None:
    with pytest.raises(ValidationError):
        Stamp(at=raw)


@pytest.mark.parametrize("value,unit,ok", [
    (80, "years", True), (1, "years", True), (150, "years", True), (0, "years", False),
    (151, "years", False), (0, "days", True), (365, "days", True), (366, "days", False),
    (-1, "days", False), (3, "months", False),
])
def test_age_in_years_or_days_under_one_year(value: int, unit: str, ok: bool) -> None:
    if ok:
        assert Age(value=value, unit=unit).unit is AgeUnit(unit)
    else:
        with pytest.raises(ValidationError):
            Age(value=value, unit=unit)


@pytest.mark.parametrize("field,value,ok", [
    ("id", "ORD-20250115-0001", True), ("id", "张三", False), ("id", "has space", False),
    ("id", "x" * 65, False), ("id", "-leading", False),
    ("institution", "652325-H01", True), ("institution", "652325-V0001", True),
    ("institution", "652325H01", False), ("institution", "052325-H01", False),
    ("patient", "v1:" + "a" * 64, True), ("patient", "v1:" + "A" * 64, False),
    ("patient", "11010519491231002X", False), ("patient", "v1:" + "a" * 63, False),
])
def test_identifier_patterns(field: str, value: str, ok: bool) -> None:
    if ok:
        assert getattr(Ids(**{field: value}), field) == value
    else:
        with pytest.raises(ValidationError):
            Ids(**{field: value})


def rejected(**over) -> IntakeRejected:
    base = dict(key="ORD-1", service="lab", reason="schema_violation",
                rejected_at=datetime(2025, 1, 1, tzinfo=UTC))
    return IntakeRejected(**{**base, **over})


def test_intake_rejected_is_keyed_by_the_refused_records_key() -> None:
    r = rejected(rejected_id="e-1", rejected_type="yigongti.lab.order.placed.v1",
                 sender="/terminals/T-1",
                 fields=(FieldError(field="tests.0.code", code="string_pattern_mismatch"),))
    assert r.CE_TYPE == "yigongti.intake.rejected.v1" and r.kafka_key() == "ORD-1"
    assert IntakeRejected.model_validate_json(r.model_dump_json()) == r


@pytest.mark.parametrize("over", [
    {"reason": "Schema Violation"}, {"reason": "名字"}, {"service": "Lab"},
    {"rejected_type": "has space"}, {"sender": "/terminals/张三"},
    {"fields": ({"field": "tests.0.code", "code": "enum", "value": "x"},)},
    {"fields": ({"field": "a b", "code": "enum"},)}, {"surprise": 1},
])
def test_intake_rejected_holds_codes_only(over: dict) -> None:
    with pytest.raises(ValidationError):
        rejected(**over)


class Order(StrictModel):
    CE_TYPE = "test.order.v1"
    KEY_FIELD = "order_id"
    order_id: Identifier
    tests: tuple[Identifier, ...]


def test_field_errors_name_fields_and_codes_never_values() -> None:
    secret = "11010519491231002X"
    with pytest.raises(ValidationError) as err:
        Order.model_validate({"order_id": "张三 " + secret, "tests": ["ok", "bad value"],
                              secret: "x", "name": "张三"})
    errors = field_errors(err.value)
    assert {(e.field, e.code) for e in errors} == {
        ("order_id", "string_pattern_mismatch"), ("tests.1", "string_pattern_mismatch"),
        ("*", "extra_forbidden"), ("name", "extra_forbidden"),
    }
    assert secret not in repr(errors) and "张三" not in repr(errors)

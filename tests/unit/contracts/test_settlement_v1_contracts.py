"""Settlement v1 contracts: strict, money as two-place strings, nothing
personal, the breakdown adds up, frozen with checked-in schemas."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from pydantic import ValidationError
from yigongti_contracts.export import path_for
from yigongti_contracts.registry import FROZEN, INTAKE_BY_SERVICE, published_by
from yigongti_contracts.settlement import examples, v1
from yigongti_contracts.settlement.codes import settlement_id_of


def test_every_contract_has_an_example_that_round_trips() -> None:
    assert set(examples.EXAMPLES) == set(v1.CONTRACTS)
    for model, instance in examples.EXAMPLES.items():
        text = instance.model_dump_json()
        assert model.model_validate_json(text, strict=True) == instance


def test_registered_frozen_with_schemas() -> None:
    assert set(INTAKE_BY_SERVICE["settlement"]) == set(v1.INTAKE)
    assert set(published_by("settlement")) >= {m.CE_TYPE for m in v1.EVENTS}
    for model in v1.CONTRACTS:
        assert model.CE_TYPE in FROZEN
        assert path_for(model.CE_TYPE).exists()


def test_money_is_a_two_place_string_never_a_float() -> None:
    done = examples.EVENT_EXAMPLES[v1.SettlementCompleted]
    data = json.loads(done.model_dump_json())
    assert data["total"] == "114300.00" and data["basic"] == "80000.00"
    data["total"] = 114300.0
    with pytest.raises(ValidationError):
        v1.SettlementCompleted.model_validate(data)


def test_the_breakdown_must_add_up() -> None:
    done = examples.EVENT_EXAMPLES[v1.SettlementCompleted]
    with pytest.raises(ValidationError, match="add up"):
        v1.SettlementCompleted.model_validate(
            {**done.model_dump(), "out_of_pocket": done.out_of_pocket + Decimal("0.01")})


def test_no_field_can_hold_an_id_number_or_a_name() -> None:
    """No free-text field: an 18-digit ID in any string field of an example is refused."""
    national_id = "11010519491231002X"
    for model, instance in examples.EXAMPLES.items():
        data = instance.model_dump(mode="json")
        for name, value in data.items():
            if isinstance(value, str):
                with pytest.raises(ValidationError):
                    model.model_validate({**data, name: national_id + " 张三"})


def test_intake_carries_no_credential() -> None:
    fields = set(v1.SettlementRequested.model_fields)
    assert not fields & {"auth_no", "id_number", "card_no", "token", "settlement_token"}
    assert "identity_id" in fields


def test_settlement_request_needs_something_to_settle_and_a_stay_when_inpatient() -> None:
    req = examples.INTAKE_EXAMPLES[v1.SettlementRequested]
    with pytest.raises(ValidationError, match="lines or posted_charges"):
        v1.SettlementRequested.model_validate(
            {**req.model_dump(), "lines": (), "posted_charges": False})
    with pytest.raises(ValidationError, match="stay"):
        v1.SettlementRequested.model_validate({**req.model_dump(), "stay": None})


def test_settlement_id_is_the_institution_and_the_out_biz_no() -> None:
    assert settlement_id_of("652325-H01", "DIS-1") == "652325-H01:DIS-1"
    assert examples.SETTLEMENT == "652325-B01:DIS-20250320-0001"

"""Every contract: registered, named, keyed, codes only, and round-trips."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError
from yigongti_contracts.base import StrictModel
from yigongti_contracts.common import IntakeRejected
from yigongti_contracts.examples import EXAMPLES
from yigongti_contracts.export import schema_of
from yigongti_contracts.lab import v1
from yigongti_contracts.registry import FROZEN, MODELS, model_for

ALL = list(MODELS.values())
LAB_TYPE = re.compile(r"^yigongti\.lab\.[a-z_]+\.[a-z_]+\.v1$")


def test_registry_holds_every_contract_and_intake_rejected() -> None:
    from yigongti_contracts.diagnosis import v1 as diagnosis
    from yigongti_contracts.referral import v1 as referral
    from yigongti_contracts.settlement import v1 as settlement

    assert set(ALL) == (set(v1.CONTRACTS) | set(diagnosis.CONTRACTS) | set(referral.CONTRACTS)
                        | set(settlement.CONTRACTS) | {IntakeRejected})
    assert len(v1.INTAKE) == 6 and len(v1.EVENTS) == 20
    # Drafts (a service's contracts before its issue closes) are not frozen yet.
    assert set(v1.CONTRACTS) | {IntakeRejected} <= set(FROZEN.values())


def test_model_for() -> None:
    assert model_for("yigongti.lab.order.placed.v1") is v1.LabOrderPlaced
    assert model_for("yigongti.intake.rejected.v1") is IntakeRejected
    assert model_for("yigongti.lab.order.placed.v2") is None


@pytest.mark.parametrize("model", v1.CONTRACTS, ids=lambda m: m.__name__)
def test_lab_types_are_versioned_noun_verb(model: type[StrictModel]) -> None:
    assert LAB_TYPE.match(model.CE_TYPE)


def test_intake_and_event_names_never_collide() -> None:
    intake = {m.CE_TYPE for m in v1.INTAKE}
    events = {m.CE_TYPE for m in v1.EVENTS}
    assert not intake & events
    assert {m.__name__ for m in v1.INTAKE}.isdisjoint(m.__name__ for m in v1.EVENTS)


@pytest.mark.parametrize("model", ALL, ids=lambda m: m.__name__)
def test_key_field_is_a_required_string_field(model: type[StrictModel]) -> None:
    field = model.model_fields[model.KEY_FIELD]
    assert field.is_required()
    assert schema_of(model)["properties"][model.KEY_FIELD].get("type") == "string"


def test_keys() -> None:
    assert v1.AnalyserResults.KEY_FIELD == "barcode"
    assert v1.SpecimenDispatched.KEY_FIELD == "shipment_id"
    assert IntakeRejected.KEY_FIELD == "key"
    others = set(v1.CONTRACTS) - {v1.AnalyserResults, v1.SpecimenDispatched}
    assert {m.KEY_FIELD for m in others} == {"order_id"}


@pytest.mark.parametrize("model", ALL, ids=lambda m: m.__name__)
def test_models_are_strict_and_immutable(model: type[StrictModel]) -> None:
    example = EXAMPLES[model]
    with pytest.raises(ValidationError, match="frozen"):
        setattr(example, model.KEY_FIELD, "other")  # noqa: B010
    with pytest.raises(ValidationError, match="extra_forbidden|Extra inputs"):
        model.model_validate({**example.model_dump(mode="json"), "patient_name": "张三"})


def _strings_without_constraint(node: Any, root: dict, path: str = "$") -> list[str]:
    """String schemas that accept free text: no pattern, enum, const or format."""
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("type") == "string" and not ({"pattern", "enum", "const", "format"}
                                                 & node.keys()):
            found.append(path)
        for key, value in node.items():
            found += _strings_without_constraint(value, root, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _strings_without_constraint(value, root, f"{path}[{i}]")
    return found


@pytest.mark.parametrize("model", ALL, ids=lambda m: m.__name__)
def test_no_free_text_anywhere(model: type[StrictModel]) -> None:
    """Every string is a code, an id, a pattern-checked number or a time."""
    schema = schema_of(model)
    assert _strings_without_constraint(schema, schema) == []


PERSONAL = re.compile(r"(^|_)(name|national_id|id_number|birth|address|phone|note|comment|"
                      r"text|remark)(_|$)")


@pytest.mark.parametrize("model", ALL, ids=lambda m: m.__name__)
def test_no_personal_fields(model: type[StrictModel]) -> None:
    names = set(re.findall(r'"([a-z_]+)":', json.dumps(schema_of(model)["properties"])))
    for defn in schema_of(model).get("$defs", {}).values():
        names |= set(defn.get("properties", {}))
    assert not [n for n in names if PERSONAL.search(n)]


@pytest.mark.parametrize("model", ALL, ids=lambda m: m.__name__)
def test_examples_round_trip_as_json(model: type[StrictModel]) -> None:
    example = EXAMPLES[model]
    assert model.model_validate_json(example.model_dump_json()) == example


@pytest.mark.parametrize("model", ALL, ids=lambda m: m.__name__)
def test_wire_json_matches_the_exported_schema(model: type[StrictModel]) -> None:
    payload = json.loads(EXAMPLES[model].model_dump_json())
    schema = schema_of(model)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(payload)


def test_free_text_detector_sees_a_plain_string() -> None:
    class Note(StrictModel):
        order_id: str
        note: str | None = None

    schema = Note.model_json_schema()
    assert len(_strings_without_constraint(schema, schema)) == 2

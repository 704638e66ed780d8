"""contracts/asyncapi/lab.yaml: generated, checked in, and valid AsyncAPI 3.0.0.

Validated with the official AsyncAPI JSON Schema from the npm package
@asyncapi/specs, installed into .tools/ by `make setup` (needs npm). A missing
package fails these tests: it never skips them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry
from yigongti_contracts.asyncapi import ASYNCAPI_DIR, document, render
from yigongti_contracts.common import IntakeRejected
from yigongti_contracts.lab import v1

REPO = Path(__file__).resolve().parents[3]
SPEC = REPO / ".tools/node_modules/@asyncapi/specs/schemas/3.0.0-without-$id.json"
CHECKED_IN = ASYNCAPI_DIR / "lab.yaml"


def _offline(uri: str) -> Any:
    raise LookupError(f"refusing to fetch {uri}: the validator must work offline")


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    if not SPEC.exists():
        pytest.fail(
            f"{SPEC.relative_to(REPO)} is missing: run `make setup` (it runs "
            "`npm install --prefix .tools @asyncapi/specs`; npm is required)",
            pytrace=False,
        )
    schema = json.loads(SPEC.read_text("utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, registry=Registry(retrieve=_offline))


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return yaml.safe_load(CHECKED_IN.read_text("utf-8"))


def errors(validator: jsonschema.Draft7Validator, doc: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
            for e in validator.iter_errors(doc)]


def test_checked_in_document_is_current() -> None:
    assert CHECKED_IN.read_text("utf-8") == render(document()), (
        "run python -m yigongti_contracts.asyncapi"
    )


def test_document_is_valid_asyncapi_3(validator, doc) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert errors(validator, doc) == []


def test_it_describes_the_three_lab_topics(doc) -> None:
    channels = doc["channels"]
    assert {c["address"] for c in channels.values()} == {
        "lab.intake.v1", "lab.events.v1", "lab.dlq.v1"}
    assert channels["labIntake"]["bindings"]["kafka"]["partitions"] == 6
    assert channels["labDlq"]["bindings"]["kafka"]["partitions"] == 1
    assert set(channels["labIntake"]["messages"]) == {m.__name__ for m in v1.INTAKE}
    assert set(channels["labEvents"]["messages"]) == (
        {m.__name__ for m in v1.EVENTS} | {IntakeRejected.__name__})


def test_operations_are_from_the_lab_services_point_of_view(doc) -> None:
    actions = {o["channel"]["$ref"]: o["action"] for o in doc["operations"].values()}
    assert actions == {"#/channels/labIntake": "receive", "#/channels/labEvents": "send",
                       "#/channels/labDlq": "send"}


def test_messages_carry_payload_schema_headers_and_key(doc) -> None:
    schemas = doc["components"]["schemas"]
    for model in (*v1.CONTRACTS, IntakeRejected):
        message = doc["components"]["messages"][model.__name__]
        assert message["name"] == model.CE_TYPE
        name = message["payload"]["$ref"].rsplit("/", 1)[1]
        assert set(schemas[name]["properties"]) == set(model.model_fields)
        assert model.KEY_FIELD in message["bindings"]["kafka"]["key"]["description"]
        assert message["headers"]["allOf"][1]["properties"]["ce_type"]["const"] == model.CE_TYPE
        example = message["examples"][0]
        assert model.model_validate(example["payload"])
        assert example["headers"]["ce_type"] == model.CE_TYPE


def test_every_reference_resolves(doc) -> None:
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                target: Any = doc
                for part in ref.removeprefix("#/").split("/"):
                    assert part in target, ref
                    target = target[part]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)


BREAKAGES = [
    ("no info.version", lambda d: d["info"].pop("version")),
    ("AsyncAPI 2 operation verb", lambda d: d["operations"]["receiveLabIntake"].update(
        action="subscribe")),
    ("partitions not a number", lambda d: d["channels"]["labIntake"]["bindings"]["kafka"]
     .update(partitions="six")),
    ("unknown binding field", lambda d: d["components"]["messages"]["LabOrderPlaced"]
     ["bindings"]["kafka"].update(partitionKey="order_id")),
    ("channel address not a string", lambda d: d["channels"]["labEvents"].update(address=7)),
    ("unknown top-level field", lambda d: d.update(topics={})),
    ("payload schema type invalid", lambda d: d["components"]["schemas"]["LabOrderPlaced"]
     .update(type=5)),
]


@pytest.mark.parametrize("edit", [b[1] for b in BREAKAGES], ids=[b[0] for b in BREAKAGES])
def test_validator_catches_a_broken_copy(validator, doc, edit) -> None:
    broken = copy.deepcopy(doc)
    edit(broken)
    assert errors(validator, broken)

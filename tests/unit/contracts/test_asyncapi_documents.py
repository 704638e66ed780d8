"""contracts/asyncapi/<service>.yaml: one per service, generated, checked in, and
valid AsyncAPI 3.0.0.

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
from yigongti_contracts import registry
from yigongti_contracts.asyncapi import ASYNCAPI_DIR, document, documented_services, render
from yigongti_contracts.common import (
    PLATFORM_REJECTION_REASONS,
    UNVERIFIED_REASONS,
    IntakeRejected,
)
from yigongti_contracts.lab import rejections, v1
from yigongti_contracts.topics import SUBSCRIBES_TO

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


def _load(service: str) -> dict[str, Any]:
    return yaml.safe_load((ASYNCAPI_DIR / f"{service}.yaml").read_text("utf-8"))


def errors(validator: jsonschema.Draft7Validator, doc: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
            for e in validator.iter_errors(doc)]


def test_each_service_with_contracts_or_subscriptions_has_a_document() -> None:
    # The lab and diagnosis have contracts; referral and settlement read their
    # events (topics.SUBSCRIBES_TO).
    assert documented_services() == ("lab", "diagnosis", "referral", "settlement")
    on_disk = {p.stem for p in ASYNCAPI_DIR.glob("*.yaml")}
    assert on_disk == set(documented_services())


@pytest.mark.parametrize("service", documented_services())
def test_checked_in_document_is_current(service: str) -> None:
    path = ASYNCAPI_DIR / f"{service}.yaml"
    assert path.read_text("utf-8") == render(document(service)), (
        "run python -m yigongti_contracts.asyncapi"
    )


@pytest.mark.parametrize("service", documented_services())
def test_document_is_valid_asyncapi_3(validator, service: str) -> None:
    doc = _load(service)
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


def test_examples_have_distinct_ids_and_the_owners_source(doc) -> None:
    # One ce_id per example: sent one after another by one terminal, a shared id
    # would be refused duplicate_id_conflict.
    examples = [m["examples"][0] for m in doc["components"]["messages"].values()
                if "examples" in m]
    ids = [e["headers"]["ce_id"] for e in examples]
    assert len(ids) == len(set(ids))
    intake = {m.CE_TYPE for m in v1.INTAKE}
    for example in examples:
        headers = example["headers"]
        if headers["ce_type"] in intake:
            assert headers["ce_source"] == f"/terminals/{headers['x-terminal-id']}"
        else:
            assert headers["ce_source"] == "/yigongti/lab"  # the kit's source (service.py)


def test_signed_intake_headers_name_the_rule_and_its_patterns(validator, doc) -> None:
    signed = doc["components"]["schemas"]["SignedIntakeHeaders"]["allOf"][1]
    assert "../terminal/README.md" in signed["description"]
    assert "../terminal/signing-vectors.json" in signed["description"]
    props = signed["properties"]
    header_schema = {"type": "object", "properties": props}
    good = {"x-nonce": "ab" * 16, "x-signature": "A" * 86 + "==",
            "x-terminal-id": "demo-terminal-1", "ce_source": "/terminals/demo-terminal-1"}
    assert not list(jsonschema.Draft202012Validator(header_schema).iter_errors(good))
    for field, bad in [("x-nonce", "ab" * 15), ("x-nonce", "a" * 33), ("x-nonce", "ab" * 65),
                       ("x-signature", "c2lnbmF0dXJl"), ("x-terminal-id", "-x"),
                       ("ce_source", "/services/lab")]:
        assert list(jsonschema.Draft202012Validator(header_schema).iter_errors(
            {**good, field: bad})), (field, bad)
    assert doc["x-terminal-contract"]["contract"] == "../terminal/intake-contract.json"


def test_intake_rejected_lists_its_reason_codes_but_its_schema_stays_open(doc) -> None:
    message = doc["components"]["messages"]["IntakeRejected"]
    codes = message["x-reason-codes"]
    assert set(codes["platform"]) == PLATFORM_REJECTION_REASONS
    assert set(codes["service"]) == set(rejections.REASONS)
    assert set(codes["never_answered"]) == UNVERIFIED_REASONS
    for code in (*PLATFORM_REJECTION_REASONS, *rejections.REASONS, *UNVERIFIED_REASONS):
        assert code in message["description"]
    # An enum in the frozen schema would break old readers when a code is added.
    reason = doc["components"]["schemas"]["IntakeRejected"]["properties"]["reason"]
    assert "enum" not in reason and "pattern" in reason


@pytest.mark.parametrize("service", ["referral", "settlement"])
def test_a_subscriber_declares_receive_operations_on_the_owners_events(service: str) -> None:
    doc = _load(service)
    owners = [o for o in SUBSCRIBES_TO[service] if registry.EVENTS_BY_OWNER.get(o)]
    assert sorted(owners) == ["diagnosis", "lab"]
    for owner in owners:
        op = doc["operations"][f"receive{owner.title()}Events"]
        assert op["action"] == "receive"
        assert op["channel"] == {"$ref": f"#/channels/{owner}Events"}
        assert op["x-tolerant-reader"] is True
        assert "Tolerant reader" in op["description"] and "skipped" in op["description"]
        assert op["bindings"]["kafka"]["groupId"]["enum"] == [f"{service}.{owner}.events.v1"]
        names = {r["$ref"].rsplit("/", 1)[1] for r in op["messages"]}
        assert len(names) == len(registry.EVENTS_BY_OWNER[owner])
    # It sends nothing on the owner's topic; its own dead letters go to its own
    # topic, its own events (once it publishes contracts) to its events topic.
    sends = {o["channel"]["$ref"] for o in doc["operations"].values() if o["action"] == "send"}
    assert f"#/channels/{service}Dlq" in sends
    assert sends <= {f"#/channels/{service}Dlq", f"#/channels/{service}Events"}
    assert doc["channels"][f"{service}Dlq"]["address"] == f"{service}.dlq.v1"
    example = doc["components"]["messages"]["LabOrderAccepted"]["examples"][0]
    assert example["headers"]["ce_source"] == "/yigongti/lab"


def test_a_service_plugs_in_through_the_registry(monkeypatch, validator) -> None:
    # A service publishing events makes its readers read them, and gets a
    # document of its own: nothing else to write.
    monkeypatch.setitem(registry.EVENTS_BY_OWNER, "diagnosis", (IntakeRejected,))
    assert "diagnosis" in documented_services()
    own = document("diagnosis")
    assert own["operations"]["sendDiagnosisEvents"]["action"] == "send"
    referral = document("referral")
    assert {"receiveLabEvents", "receiveDiagnosisEvents"} <= set(referral["operations"])
    assert referral["operations"]["receiveDiagnosisEvents"]["bindings"]["kafka"][
        "groupId"]["enum"] == ["referral.diagnosis.events.v1"]
    for doc in (own, referral):
        assert errors(validator, json.loads(json.dumps(doc))) == []


def test_every_reference_resolves() -> None:
    def walk(doc: dict[str, Any], node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                target: Any = doc
                for part in ref.removeprefix("#/").split("/"):
                    assert part in target, ref
                    target = target[part]
            for value in node.values():
                walk(doc, value)
        elif isinstance(node, list):
            for value in node:
                walk(doc, value)

    for service in documented_services():
        doc = _load(service)
        walk(doc, doc)


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
    ("unknown example field", lambda d: d["components"]["messages"]["LabOrderPlaced"]
     ["examples"][0].update(outcome="accepted")),
]


@pytest.mark.parametrize("edit", [b[1] for b in BREAKAGES], ids=[b[0] for b in BREAKAGES])
def test_validator_catches_a_broken_copy(validator, doc, edit) -> None:
    broken = copy.deepcopy(doc)
    edit(broken)
    assert errors(validator, broken)

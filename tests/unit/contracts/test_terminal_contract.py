"""contracts/terminal/: the published intake contract is generated and current,
its vectors are consistent, and the limits it writes down are the models'."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from yigongti_contracts import terminal
from yigongti_contracts.common import PLATFORM_REJECTION_REASONS, UNVERIFIED_REASONS
from yigongti_contracts.examples import EXAMPLES
from yigongti_contracts.lab import rejections, v1
from yigongti_contracts.strict import PayloadError, parse_payload

DIR = terminal.TERMINAL_DIR
CONTRACT = json.loads((DIR / terminal.CONTRACT_FILE).read_text("utf-8"))
VECTORS = json.loads((DIR / terminal.VECTORS_FILE).read_text("utf-8"))
README = (DIR / "README.md").read_text("utf-8")


@pytest.mark.parametrize("name", sorted(terminal.current()))
def test_checked_in_file_is_current(name: str) -> None:
    assert (DIR / name).read_text("utf-8") == terminal.current()[name], (
        "run python -m yigongti_contracts.terminal")


def test_regenerating_keeps_the_test_key() -> None:
    again = json.loads(terminal.current()[terminal.VECTORS_FILE])
    assert again["test_key"] == VECTORS["test_key"]
    assert "NEVER" in VECTORS["test_key"]["WARNING"]


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_each_vector_is_consistent(case) -> None:
    i, e = case["input"], case["expected"]
    value = base64.b64decode(i["value_base64"])
    assert hashlib.sha256(value).hexdigest() == e["value_sha256_hex"]
    message = bytes.fromhex(e["signing_input_hex"])
    assert message == base64.b64decode(e["signing_input_base64"])
    assert message == "\n".join([i["ce_type"], i["ce_id"], i["ce_source"], i["ce_time"],
                                 i["x-nonce"], i["x-terminal-id"],
                                 e["value_sha256_hex"]]).encode()
    assert i["ce_source"] == f"/terminals/{i['x-terminal-id']}"
    public = Ed25519PublicKey.from_public_bytes(
        base64.b64decode(VECTORS["test_key"]["public_key_base64"]))
    public.verify(base64.b64decode(e["x-signature"]), message)  # raises if not
    model = {m.CE_TYPE: m for m in v1.INTAKE}[i["ce_type"]]
    assert parse_payload(model, value).kafka_key() == i["kafka_key"]


def test_the_vectors_differ_where_the_bytes_differ() -> None:
    compact, pretty, _ = VECTORS["cases"]
    assert compact["expected"]["x-signature"] != pretty["expected"]["x-signature"]
    assert json.loads(base64.b64decode(compact["input"]["value_base64"])) == json.loads(
        base64.b64decode(pretty["input"]["value_base64"]))


def test_the_readme_names_every_reason_code_and_file() -> None:
    for code in (*PLATFORM_REJECTION_REASONS, *UNVERIFIED_REASONS, *rejections.REASONS):
        assert f"`{code}`" in README, code
    for name in (terminal.CONTRACT_FILE, terminal.VECTORS_FILE, terminal.CATALOGUE_FILE,
                 "../asyncapi/lab.yaml", "murmur2_random", "assign()"):
        assert name in README


def test_every_lab_intake_message_is_described_with_its_schema_and_key() -> None:
    lab = CONTRACT["services"]["lab"]
    assert set(lab["messages"]) == {m.CE_TYPE for m in v1.INTAKE}
    for model in v1.INTAKE:
        entry = lab["messages"][model.CE_TYPE]
        schema = json.loads((DIR / entry["schema"]).read_text("utf-8"))
        assert schema["x-key-field"] == entry["key_field"] == model.KEY_FIELD
        assert entry["sender"]
    sequence = [e["message"] for e in lab["examples"]["sequence"]]
    assert sequence == [m.__name__ for m in v1.INTAKE]


def _refused(model, payload: dict) -> list[tuple[str, str]]:
    with pytest.raises(PayloadError) as caught:
        parse_payload(model, json.dumps(payload).encode())
    assert caught.value.code == "schema_violation"
    return caught.value.fields


def _order(**changes) -> dict:
    return {**EXAMPLES[v1.LabOrderPlaced].model_dump(mode="json"), **changes}


@pytest.mark.parametrize("age", [
    {"value": 0, "unit": "years"}, {"value": 151, "unit": "years"},
    {"value": 366, "unit": "days"}, {"value": -1, "unit": "days"},
    {"value": True, "unit": "years"}, {"value": "80", "unit": "years"},
])
def test_ages_outside_the_written_bounds_are_refused(age) -> None:
    assert CONTRACT["limits"]["age"] == {"years": [1, 150], "days": [0, 365],
                                         "rule": CONTRACT["limits"]["age"]["rule"]}
    assert _refused(v1.LabOrderPlaced, _order(age=age))


def test_the_written_bounds_are_accepted() -> None:
    for age in ({"value": 1, "unit": "years"}, {"value": 150, "unit": "years"},
                {"value": 0, "unit": "days"}, {"value": 365, "unit": "days"}):
        parse_payload(v1.LabOrderPlaced, json.dumps(_order(age=age)).encode())


def test_the_written_model_rules_are_the_models() -> None:
    order = _order()
    twice = {**order, "tests": [order["tests"][0], order["tests"][0]]}
    assert ("", "value_error") in _refused(v1.LabOrderPlaced, twice)
    assert _refused(v1.LabOrderPlaced, _order(ordered_at="2025-01-15T02:00:00"))  # no timezone
    assert _refused(v1.LabOrderPlaced, _order(ordered_at=1736906400))  # epoch number
    collected = EXAMPLES[v1.SpecimenCollected].model_dump(mode="json")
    early = {**collected, "centrifuged_at": "2025-01-15T02:00:00Z"}
    assert ("", "value_error") in _refused(v1.SpecimenCollected, early)
    itself = {**collected, "recollection_of": collected["barcode"]}
    assert ("", "value_error") in _refused(v1.SpecimenCollected, itself)
    dispatched = EXAMPLES[v1.SpecimenDispatched].model_dump(mode="json")
    assert _refused(v1.SpecimenDispatched, {**dispatched, "barcodes": ["T1234", "T1234"]})
    assert "LabOrderPlaced.tests[].code" in CONTRACT["limits"]["unique"]
    with pytest.raises(PayloadError) as caught:
        parse_payload(v1.LabOrderPlaced, b'{"order_id":"A","order_id":"B"}')
    assert caught.value.fields == [("order_id", "duplicate_key")]

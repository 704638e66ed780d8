"""Values a hostile or careless sender chooses, refused cleanly where the
contracts decide what is valid: calendar edges, lax coercions, duplicate keys
(issue 9, faults 1, 6, 7 and 10)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from yigongti_contracts.envelope import Envelope, EnvelopeError, from_headers, to_headers
from yigongti_contracts.examples import EXAMPLES
from yigongti_contracts.lab.v1 import INTAKE, LabOrderPlaced
from yigongti_contracts.strict import PayloadError, parse_payload
from yigongti_kit.intake_auth import TerminalSigner, parse_ce_time, verify_record

EDGES = ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"]


def headers_with_time(value: str) -> list[tuple[str, bytes]]:
    env = Envelope(id="e1", source="/terminals/T-1", type="t.v1", time=datetime.now(UTC))
    return [(k, value.encode() if k == "ce_time" else v) for k, v in to_headers(env)]


@pytest.mark.parametrize("value", EDGES)
def test_ce_time_at_the_edges_of_the_calendar_is_a_bad_header_not_a_crash(value):
    with pytest.raises(EnvelopeError) as refused:
        from_headers(headers_with_time(value))
    assert refused.value.code == "bad_header"
    assert refused.value.fields == ("ce_time",)


@pytest.mark.parametrize("value", EDGES + ["not a time", "2026-13-40T99:99:99Z"])
def test_signature_check_reads_any_ce_time_without_raising(value):
    assert parse_ce_time(value) is None


def test_lowercase_t_and_z_are_rfc3339_and_pass_the_signature_check():
    now = datetime.now(UTC).replace(microsecond=0)
    sent = now.strftime("%Y-%m-%dt%H:%M:%Sz")
    assert parse_ce_time(sent) == now
    signer = TerminalSigner.generate("T-1")
    env = Envelope(id="e1", source=signer.source, type="t.v1", time=now)
    headers = [(k, sent.encode() if k == "ce_time" else v) for k, v in to_headers(env)]
    signed = signer.sign(headers, b"{}")
    assert verify_record(signed, b"{}", signer.public_key_b64, received_at=now,
                         max_skew_s=60) is None


def placed() -> dict:
    return json.loads(EXAMPLES[LabOrderPlaced].model_dump_json())


@pytest.mark.parametrize("value", EDGES)
def test_payload_date_at_the_edges_of_the_calendar_is_a_schema_violation(value):
    data = placed()
    data["ordered_at"] = value
    with pytest.raises(PayloadError) as refused:
        parse_payload(LabOrderPlaced, json.dumps(data).encode())
    assert refused.value.code == "schema_violation"
    assert ("ordered_at", "datetime_range") in refused.value.fields or any(
        f == "ordered_at" for f, _ in refused.value.fields)


@pytest.mark.parametrize("path, value", [
    (("age", "value"), True),  # a boolean for an integer: was a 1-day-old patient
    (("age", "value"), "80"),  # a numeric string
    (("ordered_at",), 1700000000),  # an epoch number for a time
    (("tests", 0, "code"), 2823),  # a number for a code
])
def test_lax_coercions_are_refused_by_the_published_schema_too(path, value):
    import jsonschema
    from yigongti_contracts.export import schema_of

    data = placed()
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    errors = list(jsonschema.Draft202012Validator(schema_of(LabOrderPlaced)).iter_errors(data))
    assert errors, "the schema admits what the model refuses"


@pytest.mark.parametrize("path, value", [
    (("age", "value"), True),
    (("age", "value"), "80"),
    (("ordered_at",), 1700000000),
    (("tests", 0, "code"), 2823),
])
def test_lax_coercions_are_refused(path, value):
    data = placed()
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(PayloadError) as refused:
        parse_payload(LabOrderPlaced, json.dumps(data).encode())
    assert refused.value.code == "schema_violation"
    assert ".".join(map(str, path)) in {f for f, _ in refused.value.fields}


def test_duplicate_keys_are_refused_naming_the_key_never_its_values():
    text = json.dumps(placed())
    doubled = text[:-1] + ', "visit_id": "V-OTHER", "order_id": "ORD-OTHER"}'
    with pytest.raises(PayloadError) as refused:
        parse_payload(LabOrderPlaced, doubled.encode())
    assert refused.value.code == "schema_violation"
    assert set(refused.value.fields) == {("visit_id", "duplicate_key"),
                                         ("order_id", "duplicate_key")}
    assert "V-OTHER" not in str(refused.value)


def test_a_nested_duplicate_key_is_refused_with_its_path():
    data = placed()
    text = json.dumps(data).replace('"unit": "years"', '"unit": "years", "unit": "days"')
    with pytest.raises(PayloadError) as refused:
        parse_payload(LabOrderPlaced, text.encode())
    assert ("age.unit", "duplicate_key") in refused.value.fields


def test_malformed_json_is_its_own_reason():
    with pytest.raises(PayloadError) as refused:
        parse_payload(LabOrderPlaced, b'{"order_id": ')
    assert refused.value.code == "malformed_json"


@pytest.mark.parametrize("model", INTAKE, ids=lambda m: m.__name__)
def test_every_published_intake_example_parses_strictly(model):
    example = EXAMPLES[model]
    assert parse_payload(model, example.model_dump_json().encode()) == example

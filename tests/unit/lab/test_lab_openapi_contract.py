"""The lab's OpenAPI is a contract a vendor builds from (issue 9): every answer
the lab gives is documented, and what the lab refuses the document refuses."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import ValidationError
from yigongti_lab import api, openapi

DOC = openapi.document()
OPERATIONS = [(method, path, op) for path, methods in DOC["paths"].items()
              for method, op in methods.items()]
TOKEN_OPERATIONS = [(m, p, op) for m, p, op in OPERATIONS if p not in ("/healthz", "/readyz")]
ID_PATHS = {"/orders/{order_id}", "/orders/{order_id}/report", "/orders/{order_id}/fhir",
            "/patients/{patient_ref}/recognised-results", "/specimens/{barcode}/receipt",
            "/specimens/{barcode}/confirm", "/orders/{order_id}/verify",
            "/orders/{order_id}/amend", "/critical-values/{critical_id}/call-backs"}
ACTIONS = {"/specimens/{barcode}/receipt", "/specimens/{barcode}/confirm",
           "/orders/{order_id}/verify", "/orders/{order_id}/amend",
           "/critical-values/{critical_id}/call-backs"}


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                 "components": DOC["components"]})


def label(method: str, path: str) -> str:
    return f"{method.upper()} {path}"


def test_eleven_operations_need_a_token_and_each_names_the_roles_that_may_call_it():
    assert len(TOKEN_OPERATIONS) == 11
    for method, path, op in TOKEN_OPERATIONS:
        alternatives = op.get("security")
        assert alternatives, label(method, path)
        roles = {role for alt in alternatives for role in alt["HTTPBearer"]}
        assert roles and roles <= {"clinician", "clinic_terminal", "lab_technologist",
                                   "lab_physician"}, label(method, path)


@pytest.mark.parametrize("method, path, op", TOKEN_OPERATIONS,
                         ids=[label(m, p) for m, p, _ in TOKEN_OPERATIONS])
def test_every_token_operation_documents_the_answers_it_can_give(method, path, op):
    expected = {"200", "401", "403", "413", "422", "503"}
    if path in ID_PATHS:
        expected.add("404")  # absent, or out of the caller's scope: the same answer
    if path in ACTIONS:
        expected.add("409")
    assert set(op["responses"]) == expected
    for status in expected - {"200"}:
        response = op["responses"][status]
        assert response["description"]
        assert "application/json" in response["content"], status
    assert "WWW-Authenticate" in op["responses"]["401"]["headers"]


def test_every_operation_documents_413_422_503_and_its_body_limit():
    for method, path, op in OPERATIONS:
        assert {"413", "422", "503"} <= set(op["responses"]), label(method, path)
        assert 0 < op["x-max-body-bytes"] <= 1_048_576, label(method, path)


def test_the_documented_422_body_lists_field_paths_and_codes_only():
    error = DOC["components"]["schemas"]["ValidationError"]
    assert set(error["properties"]) == {"loc", "type"}
    assert error["additionalProperties"] is False
    v = validator("HTTPValidationError")
    assert v.is_valid({"detail": [{"loc": ["body", "value"], "type": "decimal_parsing"}]})
    assert not v.is_valid({"detail": [{"loc": ["body", "value"], "type": "decimal_parsing",
                                       "input": "<script>", "msg": "x"}]})
    assert not v.is_valid({"detail": "reached is given exactly when someone answered"})


def test_the_bearer_token_is_documented():
    scheme = DOC["components"]["securitySchemes"]["HTTPBearer"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    text = scheme["description"]
    for needed in ("EdDSA", "Ed25519", "`sub`", "`inst`", "`roles`", "`iat`", "`exp`",
                   "`iss`", '"yigongti"', "`aud`", '"lab"', "401", "403",
                   "clinician", "clinic_terminal", "lab_technologist", "lab_physician"):
        assert needed in text, needed


def test_every_integer_is_bounded_by_what_the_database_holds():
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            if node.get("type") == "integer":
                found.append(where)
                assert "maximum" in node and node["maximum"] <= 2**63 - 1, where
                assert "minimum" in node and node["minimum"] >= -(2**63), where
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}/{i}")

    walk(DOC["paths"], "#/paths")
    walk(DOC["components"]["schemas"], "#/components/schemas")
    assert found


def test_every_id_path_parameter_has_the_pattern_of_its_id():
    for method, path, op in TOKEN_OPERATIONS:
        for param in op.get("parameters", []):
            if param["in"] == "path":
                assert param["schema"]["pattern"].startswith("^"), (label(method, path), param)


def test_the_amendment_value_limits_are_documented():
    v = validator("AmendRequest")
    ok = {"observation_id": "B1.K.1", "reason": "other"}
    for value in ("4.5", "-0.25", "999999999999.999999", "0"):
        assert v.is_valid({**ok, "value": value}), value
    for value in ("1e13", "1234567890123", "0.1234567", "", "4,5", " 4.5", "NaN", 4.5):
        assert not v.is_valid({**ok, "value": value}), value
    assert v.is_valid({**ok, "coded_value": "POS"})
    for coded in ("", "P\u0000S", "x" * 17):
        assert not v.is_valid({**ok, "coded_value": coded}), coded
    assert not v.is_valid(ok), "one of value and coded_value"
    assert not v.is_valid({**ok, "value": "4.5", "coded_value": "POS"}), "not both"
    assert v.is_valid({**ok, "value": None, "coded_value": "POS"}), "null is not given"
    assert not v.is_valid({**ok, "value": None, "coded_value": None})


def test_reached_is_required_exactly_for_the_outcomes_where_someone_answered():
    v = validator("CallBackRequest")
    assert v.is_valid({"outcome": "confirmed_read_back", "reached": "doc-17"})
    assert v.is_valid({"outcome": "reached_no_read_back", "reached": "doc-17"})
    assert v.is_valid({"outcome": "unable_to_reach"})
    assert not v.is_valid({"outcome": "confirmed_read_back"})
    assert not v.is_valid({"outcome": "reached_no_read_back"})
    assert not v.is_valid({"outcome": "unable_to_reach", "reached": "doc-17"})


def test_the_triglyceride_concentration_is_a_decimal_string():
    v = validator("ReceiptRequest")
    inspection = {"not_haemolysed": True, "not_lipaemic": True, "not_clotted": True,
                  "volume_sufficient": True, "right_tube": True, "label_matches": True}
    assert v.is_valid({"inspection": inspection, "triglyceride_g_per_l": "11.3"})
    for bad in ("abc", "", "1e3", "1,5"):
        assert not v.is_valid({"inspection": inspection, "triglyceride_g_per_l": bad}), bad


ABSENT = object()


def body_of(**fields) -> dict:
    return {k: v for k, v in fields.items() if v is not ABSENT}


def model_accepts(model, body: dict) -> bool:
    try:
        model.model_validate_json(json.dumps(body))
    except ValidationError:
        return False
    return True


@settings(max_examples=300, derandomize=True, database=None)
@given(st.builds(body_of,
                 observation_id=st.sampled_from([ABSENT, "B1.K.1", "", "a b"]),
                 value=st.sampled_from([ABSENT, None, "4.5", "-0.25", "1e3", "1e13", 4.5, "",
                                        "1234567890123", "0.1234567"]),
                 coded_value=st.sampled_from([ABSENT, None, "POS", "2+", "", "x" * 17]),
                 reason=st.sampled_from([ABSENT, "other", "guess"])))
def test_the_amendment_model_refuses_exactly_what_its_schema_refuses(body):
    assert model_accepts(api.AmendRequest, body) == validator("AmendRequest").is_valid(body)


@settings(max_examples=100, derandomize=True, database=None)
@given(st.builds(body_of,
                 outcome=st.sampled_from([ABSENT, "confirmed_read_back", "reached_no_read_back",
                                          "unable_to_reach", "hung_up"]),
                 reached=st.sampled_from([ABSENT, None, "doc-17", "", "a b"])))
def test_the_call_back_model_refuses_exactly_what_its_schema_refuses(body):
    assert model_accepts(api.CallBackRequest, body) == validator("CallBackRequest").is_valid(body)

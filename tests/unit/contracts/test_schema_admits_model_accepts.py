"""What each published intake schema admits, the model accepts (issue 9
fault 6), strictly parsed as the service parses it: a vendor building from the
JSON Schema alone is refused only for a rule across fields, which a schema
cannot state and the model names as `value_error`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from schema_strategies import from_schema
from yigongti_contracts.registry import INTAKE_BY_SERVICE
from yigongti_contracts.strict import PayloadError, parse_payload

SCHEMAS = Path(__file__).resolve().parents[3] / "contracts" / "schemas"
INTAKE = [m for models in INTAKE_BY_SERVICE.values() for m in models]
# The cross-field rules of the models (their model validators): documented in
# the terminal contract's limits.
CROSS_FIELD = {"value_error"}


@pytest.mark.parametrize("model", INTAKE, ids=lambda m: m.__name__)
def test_every_document_the_published_schema_admits_is_accepted(model):
    path = SCHEMAS / f"{model.CE_TYPE}.json"
    schema = json.loads(path.read_text()) if path.exists() else model.model_json_schema()

    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(from_schema(schema))
    def admitted_is_accepted(document):
        try:
            parse_payload(model, json.dumps(document).encode())
        except PayloadError as refused:
            # A refusal names a cross-field rule (an item refused by one may
            # also leave its list too short: a consequence, not another rule).
            codes = {code for _, code in refused.fields}
            assert codes & CROSS_FIELD and codes <= CROSS_FIELD | {"too_short"}, refused.fields

    admitted_is_accepted()

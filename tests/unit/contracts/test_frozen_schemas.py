"""Frozen contracts: the checked-in JSON Schemas and today's models agree.

A model may differ from its file only by changes an old reader survives (new
optional fields, documentation); then re-run `python -m yigongti_contracts.export`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import Field
from yigongti_contracts.compat import breaking_changes
from yigongti_contracts.export import SCHEMA_DIR, current, path_for, render, schema_of
from yigongti_contracts.lab import v1
from yigongti_contracts.registry import FROZEN

REPO = Path(__file__).resolve().parents[3]


def checked_in(ce_type: str) -> dict:
    path = path_for(ce_type)
    assert path.exists(), f"{path.name} missing: run python -m yigongti_contracts.export"
    return json.loads(path.read_text("utf-8"))


def test_schemas_live_in_the_repository() -> None:
    assert SCHEMA_DIR == REPO / "contracts" / "schemas"


@pytest.mark.parametrize("ce_type", sorted(FROZEN))
def test_model_is_its_frozen_schema_or_compatible_with_it(ce_type: str) -> None:
    old = checked_in(ce_type)
    new = schema_of(FROZEN[ce_type])
    if new == old:
        return
    changes = breaking_changes(old, new)
    assert not changes, f"{ce_type} breaks old readers:\n" + "\n".join(map(str, changes))


def test_no_frozen_contract_was_removed() -> None:
    files = {p.name for p in SCHEMA_DIR.glob("*.json")}
    assert files == {path_for(t).name for t in FROZEN}


def test_export_is_stable_text() -> None:
    first = current()
    assert first == current()
    text = first["yigongti.lab.order.placed.v1"]
    assert text.endswith("}\n") and json.loads(text)["x-ce-type"] == "yigongti.lab.order.placed.v1"
    assert render(json.loads(text)) == text  # sorted keys: re-rendering changes nothing


def test_a_new_required_field_would_fail_the_check() -> None:
    class LabOrderPlaced(v1.LabOrderPlaced):
        ward: str = Field(pattern="^[A-Z]$")

    changes = breaking_changes(checked_in(v1.LabOrderPlaced.CE_TYPE), schema_of(LabOrderPlaced))
    assert [(c.path, c.kind) for c in changes] == [("ward", "field_added_required")]


def test_a_new_optional_field_would_pass_the_check() -> None:
    class LabOrderPlaced(v1.LabOrderPlaced):
        ward: str | None = Field(default=None, pattern="^[A-Z]$")

    assert breaking_changes(checked_in(v1.LabOrderPlaced.CE_TYPE), schema_of(LabOrderPlaced)) == []

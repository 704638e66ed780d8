"""The compatibility checker catches each kind of breaking change (compat.py)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from yigongti_contracts.compat import breaking_changes, is_compatible

BASE: dict[str, Any] = {
    "type": "object",
    "title": "Thing",
    "x-ce-type": "test.thing.v1",
    "x-key-field": "id",
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 10},
        "count": {"type": "integer", "minimum": 0, "maximum": 10},
        "kind": {"$ref": "#/$defs/Kind"},
        "note": {"anyOf": [{"type": "string", "pattern": "^x$"}, {"type": "null"}],
                 "default": None},
        "at": {"type": "string", "format": "date-time"},
        "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 1},
    },
    "required": ["id", "count", "kind", "at", "items"],
    "$defs": {
        "Kind": {"type": "string", "enum": ["a", "b"], "title": "Kind"},
        "Item": {"type": "object", "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]+$"},
            "qty": {"type": "integer", "minimum": 1, "default": 1},
        }, "required": ["code"]},
    },
}


def changed(edit: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    new = copy.deepcopy(BASE)
    edit(new)
    return new


def props(s: dict[str, Any]) -> dict[str, Any]:
    return s["properties"]


BREAKING: list[tuple[str, Callable[[dict[str, Any]], Any], str, str]] = [
    ("field removed", lambda s: props(s).pop("count"), "count", "field_removed"),
    ("optional field removed", lambda s: props(s).pop("note"), "note", "field_removed"),
    ("nested field removed", lambda s: s["$defs"]["Item"]["properties"].pop("qty"),
     "items[].qty", "field_removed"),
    ("new required field", lambda s: (props(s).update(extra={"type": "string", "enum": ["x"]}),
                                      s["required"].append("extra")),
     "extra", "field_added_required"),
    ("optional to required", lambda s: s["required"].append("note"), "note",
     "optional_to_required"),
    ("required to optional", lambda s: s["required"].remove("count"), "count",
     "required_to_optional"),
    ("type changed", lambda s: props(s)["count"].update(type="string"), "count",
     "type_changed"),
    ("type changed behind a ref", lambda s: s["$defs"]["Kind"].update(type="integer"), "kind",
     "type_changed"),
    ("null no longer allowed", lambda s: props(s).update(
        note={"type": "string", "pattern": "^x$", "default": None}), "note",
     "null_no_longer_allowed"),
    ("null now allowed", lambda s: props(s).update(
        count={"anyOf": [{"type": "integer", "minimum": 0, "maximum": 10}, {"type": "null"}]}),
     "count", "null_now_allowed"),
    ("enum value removed", lambda s: s["$defs"]["Kind"]["enum"].remove("b"), "kind",
     "enum_value_removed"),
    ("enum value added", lambda s: s["$defs"]["Kind"]["enum"].append("c"), "kind",
     "enum_value_added"),
    ("pattern tightened", lambda s: props(s)["id"].update(pattern="^[a-c]+$"), "id",
     "pattern_changed"),
    ("pattern changed in an array item", lambda s: s["$defs"]["Item"]["properties"]["code"]
     .update(pattern="^[A-Z0-9]+$"), "items[].code", "pattern_changed"),
    ("format changed", lambda s: props(s)["at"].update(format="date"), "at", "format_changed"),
    ("maximum lowered", lambda s: props(s)["count"].update(maximum=5), "count",
     "limit_tightened"),
    ("minimum raised", lambda s: props(s)["count"].update(minimum=1), "count",
     "limit_tightened"),
    ("maxLength lowered", lambda s: props(s)["id"].update(maxLength=8), "id",
     "limit_tightened"),
    ("maxLength raised", lambda s: props(s)["id"].update(maxLength=64), "id",
     "limit_loosened"),
    ("limit added", lambda s: props(s)["count"].update(multipleOf=2), "count",
     "keyword_changed"),
    ("minItems raised", lambda s: props(s)["items"].update(minItems=2), "items",
     "limit_tightened"),
    ("limit removed", lambda s: props(s)["count"].pop("maximum"), "count", "limit_loosened"),
    ("default changed", lambda s: s["$defs"]["Item"]["properties"]["qty"].update(default=2),
     "items[].qty", "default_changed"),
    ("ce_type changed", lambda s: s.update({"x-ce-type": "test.thing.v2"}), "$",
     "ce_type_changed"),
    ("key field changed", lambda s: s.update({"x-key-field": "count"}), "$",
     "key_field_changed"),
    ("array became object", lambda s: props(s).update(items={"type": "object"}), "items",
     "type_changed"),
]


@pytest.mark.parametrize("edit,path,kind", [b[1:] for b in BREAKING],
                         ids=[b[0] for b in BREAKING])
def test_breaking_change_is_reported(edit, path: str, kind: str) -> None:
    changes = breaking_changes(BASE, changed(edit))
    assert (path, kind) in {(c.path, c.kind) for c in changes}, changes
    assert not is_compatible(BASE, changed(edit))


COMPATIBLE: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("identical", lambda s: None),
    ("new optional field", lambda s: props(s).update(
        colour={"anyOf": [{"type": "string", "enum": ["red"]}, {"type": "null"}],
                "default": None})),
    ("new optional nested field", lambda s: s["$defs"]["Item"]["properties"].update(
        lot={"type": "string", "pattern": "^[0-9]+$"})),
    ("documentation changed", lambda s: (s.update(title="Other", description="new words"),
                                         props(s)["id"].update(description="the id"),
                                         s["$defs"]["Kind"].update(title="K"))),
    ("definition inlined", lambda s: props(s).update(kind=copy.deepcopy(s["$defs"]["Kind"]))),
]


@pytest.mark.parametrize("edit", [c[1] for c in COMPATIBLE], ids=[c[0] for c in COMPATIBLE])
def test_additive_optional_changes_are_compatible(edit) -> None:
    assert breaking_changes(BASE, changed(edit)) == []


def test_every_change_is_listed() -> None:
    def many(s: dict[str, Any]) -> None:
        props(s).pop("count")
        s["$defs"]["Kind"]["enum"].append("c")
        props(s)["id"].update(pattern="^.*$")

    kinds = sorted(c.kind for c in breaking_changes(BASE, changed(many)))
    assert kinds == ["enum_value_added", "field_removed", "pattern_changed"]
    assert all(str(c).startswith(c.path) for c in breaking_changes(BASE, changed(many)))


def test_recursive_definitions_terminate() -> None:
    tree = {"type": "object", "$defs": {"Node": {"type": "object", "properties": {
        "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}},
        "properties": {"root": {"$ref": "#/$defs/Node"}}}
    assert breaking_changes(tree, copy.deepcopy(tree)) == []

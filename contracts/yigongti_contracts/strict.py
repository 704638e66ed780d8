"""Reading a payload the way the contracts decide what is valid (DESIGN §4:
strict where we decide).

`parse_payload(Model, value)` is the one way a service reads an event's JSON:
- duplicate keys are refused (JSON leaves them to the reader; with a "last
  one wins" parser the signer and the service could read different orders);
- the model validates in strict JSON mode: no boolean for an integer, no
  numeric string for a number, no epoch number for a time, no number for a
  code: what the checked-in JSON Schema refuses, the model refuses too.
Errors name field paths and codes (`common.field_errors`), never values.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .common import field_errors, safe_field

M = TypeVar("M", bound=BaseModel)


class PayloadError(ValueError):
    """`code`: malformed_json or schema_violation; `fields`: (path, code) pairs."""

    def __init__(self, code: str, fields: list[tuple[str, str]]) -> None:
        super().__init__(code)
        self.code = code
        self.fields = fields


class _Object(dict):
    """A JSON object, remembering which of its keys came more than once."""

    duplicates: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        obj.duplicates = tuple(sorted({k for k, _ in pairs if k in seen or seen.add(k)}))
    return obj


def _duplicate_paths(value: Any, path: str = "") -> list[str]:
    found: list[str] = []
    stack = [(value, path)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, _Object):
            found += [f"{at}.{k}" if at else k for k in node.duplicates]
            stack += [(v, f"{at}.{k}" if at else k) for k, v in node.items()]
        elif isinstance(node, list):
            stack += [(v, f"{at}.{i}" if at else str(i)) for i, v in enumerate(node)]
    return sorted(found)


def parse_payload(model: type[M], value: bytes) -> M:
    """`value` as an instance of `model`; PayloadError otherwise."""
    try:
        data = json.loads(value, object_pairs_hook=_object)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nested too deep for the parser ("[[[[…"), within the size limit.
        raise PayloadError("malformed_json", [("value", "json")]) from None
    duplicates = _duplicate_paths(data)
    if duplicates:
        raise PayloadError("schema_violation",
                           [(safe_field(p), "duplicate_key") for p in duplicates][:50])
    try:
        return model.model_validate_json(value, strict=True)
    except ValidationError as exc:
        return _refuse(exc)


def _refuse(exc: ValidationError):
    fields = [(f.field, f.code) for f in field_errors(exc)]
    if any(code == "json_invalid" for _, code in fields):
        raise PayloadError("malformed_json", [("value", "json")]) from None
    raise PayloadError("schema_violation", fields) from None

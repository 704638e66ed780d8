"""Compatibility of two JSON Schemas of one contract version (DESIGN §4).

Events stay on topics: new readers read old records and old readers read new
ones. So within a version the only allowed change is a new *optional* field,
which tolerant readers ignore. Everything else is reported as breaking:

- field removed, new required field, optional → required, required → optional;
- type changed, null allowed or no longer allowed, union changed;
- enum value removed (old records no longer read) or added (old readers refuse it);
- pattern, format or const changed; a limit tightened or loosened;
- default changed (an absent field changes meaning); ce_type or key field changed.

Titles, descriptions and examples may change freely.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

Schema = dict[str, Any]

# Keywords that document and never change what is valid.
_DOC_KEYS = frozenset({"title", "description", "examples", "$comment", "$schema", "$id",
                       "$defs", "definitions", "deprecated", "readOnly", "writeOnly"})
# Lower bounds: raising them tightens. Upper bounds: lowering them tightens.
_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_HANDLED = frozenset({
    "type", "enum", "const", "pattern", "format", "properties", "required", "items",
    "prefixItems", "additionalProperties", "anyOf", "oneOf", "allOf", "$ref", "default",
    *_LOWER, *_UPPER,
})
_NULL = {"type": "null"}


@dataclass(frozen=True)
class Change:
    path: str
    kind: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}" + (f" ({self.detail})" if self.detail else "")


def breaking_changes(old: Schema, new: Schema) -> list[Change]:
    """Every change from `old` to `new` that breaks a reader or a stored record."""
    checker = _Checker(old, new)
    for key, kind in (("x-ce-type", "ce_type_changed"), ("x-key-field", "key_field_changed")):
        if old.get(key) != new.get(key):
            checker.report("$", kind, f"{old.get(key)!r} → {new.get(key)!r}")
    checker.compare(old, new, "$")
    return checker.changes


def is_compatible(old: Schema, new: Schema) -> bool:
    return not breaking_changes(old, new)


class _Checker:
    def __init__(self, old_root: Schema, new_root: Schema) -> None:
        self.old_root = old_root
        self.new_root = new_root
        self.changes: list[Change] = []
        self._seen: set[tuple[str, str]] = set()

    def report(self, path: str, kind: str, detail: str = "") -> None:
        self.changes.append(Change(path, kind, detail))

    def compare(self, old: Schema, new: Schema, path: str) -> None:
        old_ref, new_ref = old.get("$ref"), new.get("$ref")
        if old_ref or new_ref:  # compare each pair of definitions once (and stop cycles)
            key = (str(old_ref), str(new_ref))
            if key in self._seen:
                return
            self._seen.add(key)
        old = self._resolve(old, self.old_root)
        new = self._resolve(new, self.new_root)

        if old.get("default") != new.get("default"):
            self.report(path, "default_changed", f"{old.get('default')!r} → {new.get('default')!r}")

        old_branches, old_null = _branches(old)
        new_branches, new_null = _branches(new)
        if old_null and not new_null:
            self.report(path, "null_no_longer_allowed")
        if new_null and not old_null:
            self.report(path, "null_now_allowed")
        if len(old_branches) != len(new_branches):
            self.report(path, "type_changed", "union branches changed")
            return
        if len(old_branches) > 1 or old_branches[0] is not old:
            for o, n in zip(old_branches, new_branches, strict=True):
                self.compare(o, n, path)
            return
        self._compare_one(old, new, path)

    def _compare_one(self, old: Schema, new: Schema, path: str) -> None:
        if _types(old) != _types(new):
            self.report(path, "type_changed", f"{_types(old)} → {_types(new)}")
            return
        self._compare_enum(old, new, path)
        for key, kind in (("const", "const_changed"), ("pattern", "pattern_changed"),
                          ("format", "format_changed")):
            if old.get(key) != new.get(key):
                self.report(path, kind, f"{old.get(key)!r} → {new.get(key)!r}")
        self._compare_limits(old, new, path)
        self._compare_object(old, new, path)
        self._compare_items(old, new, path)
        if "allOf" in old or "allOf" in new:
            olds, news = old.get("allOf", []), new.get("allOf", [])
            if len(olds) != len(news):
                self.report(path, "type_changed", "allOf changed")
            else:
                for o, n in zip(olds, news, strict=True):
                    self.compare(o, n, path)
        for key in sorted((set(old) | set(new)) - _HANDLED - _DOC_KEYS):
            if not key.startswith("x-") and old.get(key) != new.get(key):
                self.report(path, "keyword_changed", key)

    def _compare_enum(self, old: Schema, new: Schema, path: str) -> None:
        if "enum" not in old and "enum" not in new:
            return
        if "enum" not in old:
            self.report(path, "limit_tightened", "enum added")
            return
        if "enum" not in new:
            self.report(path, "limit_loosened", "enum removed")
            return
        old_values, new_values = list(old["enum"]), list(new["enum"])
        for value in old_values:
            if value not in new_values:
                self.report(path, "enum_value_removed", repr(value))
        for value in new_values:
            if value not in old_values:
                self.report(path, "enum_value_added", repr(value))

    def _compare_limits(self, old: Schema, new: Schema, path: str) -> None:
        for key in (*_LOWER, *_UPPER):
            a, b = old.get(key), new.get(key)
            if a == b:
                continue
            lower = key in _LOWER
            if a is None:
                tightened = True
            elif b is None:
                tightened = False
            else:
                tightened = (b > a) if lower else (b < a)
            kind = "limit_tightened" if tightened else "limit_loosened"
            self.report(path, kind, f"{key} {a!r} → {b!r}")

    def _compare_object(self, old: Schema, new: Schema, path: str) -> None:
        old_props, new_props = old.get("properties", {}), new.get("properties", {})
        old_req, new_req = set(old.get("required", ())), set(new.get("required", ()))
        for name in old_props:
            sub = _join(path, name)
            if name not in new_props:
                self.report(sub, "field_removed")
                continue
            if name in old_req and name not in new_req:
                self.report(sub, "required_to_optional")
            if name in new_req and name not in old_req:
                self.report(sub, "optional_to_required")
            self.compare(old_props[name], new_props[name], sub)
        for name in new_props:
            if name not in old_props and name in new_req:
                self.report(_join(path, name), "field_added_required")
        old_extra, new_extra = old.get("additionalProperties"), new.get("additionalProperties")
        if isinstance(old_extra, dict) and isinstance(new_extra, dict):
            self.compare(old_extra, new_extra, _join(path, "*"))
        elif isinstance(old_extra, dict) != isinstance(new_extra, dict):
            self.report(_join(path, "*"), "type_changed", "map values changed")

    def _compare_items(self, old: Schema, new: Schema, path: str) -> None:
        for key in ("items", "prefixItems"):
            a, b = old.get(key), new.get(key)
            if a is None and b is None:
                continue
            if isinstance(a, dict) and isinstance(b, dict):
                self.compare(a, b, path + "[]")
            elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
                for i, (o, n) in enumerate(zip(a, b, strict=True)):
                    self.compare(o, n, f"{path}[{i}]")
            else:
                self.report(path + "[]", "type_changed", f"{key} changed")

    def _resolve(self, node: Schema, root: Schema) -> Schema:
        seen: set[str] = set()
        while "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/") or ref in seen:
                raise ValueError(f"cannot resolve $ref {ref!r}")
            seen.add(ref)
            target: Any = root
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            node = {**target, **siblings}
        return node


def _branches(schema: Schema) -> tuple[list[Schema], bool]:
    """The non-null alternatives of a schema and whether null is allowed."""
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if alternatives is None:
        types = schema.get("type")
        if isinstance(types, list) and "null" in types:
            rest = [t for t in types if t != "null"]
            plain = {k: v for k, v in schema.items() if k != "default"}
            return [{**plain, "type": rest[0] if len(rest) == 1 else rest}], True
        return [schema], False
    rest = [b for b in alternatives if b != _NULL]
    return rest or [_NULL], len(rest) != len(alternatives)


def _types(schema: Schema) -> tuple[str, ...]:
    value = schema.get("type")
    if value is None:
        return ()
    return tuple(sorted(value)) if isinstance(value, list) else (value,)


def _join(path: str, name: str) -> str:
    return name if path == "$" else f"{path}.{name}"


def main(argv: list[str] | None = None) -> int:
    """python -m yigongti_contracts.compat OLD.json NEW.json"""
    import json
    from pathlib import Path

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(main.__doc__, file=sys.stderr)
        return 2
    old, new = (json.loads(Path(p).read_text("utf-8")) for p in args)
    changes = breaking_changes(old, new)
    for change in changes:
        print(change)
    return 1 if changes else 0


if __name__ == "__main__":
    raise SystemExit(main())

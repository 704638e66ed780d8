"""Hypothesis strategies that generate JSON documents from a contract's JSON
Schema (the subset pydantic writes: objects, arrays, strings with patterns,
enums and date-time, integers and booleans, anyOf, $ref to $defs).

Used to show that what the published schema admits, the service's model
accepts (issue 9 fault 6): a vendor building from the schema is never
refused for something the schema allows, except where a model validator
states a rule across fields (a unique list, an amount that is price ×
quantity), which the schema cannot say.

(hypothesis-jsonschema does not run with the Hypothesis this project pins.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

_OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=6)),
                            timezone(timedelta(hours=-5, minutes=-30))])


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    return _node(schema, schema)


def _node(node: dict[str, Any], root: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        return st.deferred(lambda: _node(root["$defs"][name], root))
    if "anyOf" in node:
        return st.one_of([_node(branch, root) for branch in node["anyOf"]])
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(node.get("minimum", -(2**31)), node.get("maximum", 2**31))
    if kind == "string":
        return _string(node)
    if kind == "array":
        return st.lists(_node(node["items"], root), min_size=node.get("minItems", 0),
                        max_size=min(node.get("maxItems", 5), 5)).map(tuple).map(list)
    if kind == "object":
        return _object(node, root)
    raise NotImplementedError(f"schema node {node}")


def _string(node: dict[str, Any]) -> st.SearchStrategy[str]:
    if node.get("format") == "date-time":
        return st.builds(
            lambda moment, tz: moment.replace(tzinfo=UTC).astimezone(tz).isoformat(),
            st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
            _OFFSETS)
    if "pattern" in node:
        return st.from_regex(node["pattern"], fullmatch=True).filter(
            lambda s: node.get("minLength", 0) <= len(s) <= node.get("maxLength", 10**9))
    return st.text(min_size=node.get("minLength", 0), max_size=node.get("maxLength", 20))


def _object(node: dict[str, Any], root: dict[str, Any]) -> st.SearchStrategy[dict]:
    properties = node.get("properties", {})
    required = set(node.get("required", ()))
    fixed = {name: _node(prop, root) for name, prop in properties.items() if name in required}
    optional = {name: _node(prop, root) for name, prop in properties.items()
                if name not in required}
    return st.fixed_dictionaries(fixed, optional=optional)

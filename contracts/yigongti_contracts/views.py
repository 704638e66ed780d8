"""Tolerant views of another service's events (DESIGN §4: a consumer of another
service's events is a tolerant reader).

The owner's models forbid unknown fields, as they must for what the owner
publishes. A reader must not: an additive change on the owner's side (a new
optional field, within the version) would make it refuse every new event.
`tolerant_view(Model)` is the same model, with the same field types,
constraints and validators, that ignores fields it does not know, at every
level (nested parts included).
"""

from __future__ import annotations

import types
import typing
from copy import copy
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict


@cache
def tolerant_view(model: type[BaseModel]) -> type[BaseModel]:
    """A subclass of `model` that ignores unknown fields, nested models too."""
    namespace: dict[str, Any] = {
        "model_config": ConfigDict(**{**model.model_config, "extra": "ignore"}),
        "__module__": model.__module__,
        "__annotations__": {},
    }
    for name, info in model.model_fields.items():
        annotation = _tolerant(info.annotation)
        if annotation is not info.annotation:
            # Redeclared with its own FieldInfo: default, alias and constraints kept.
            namespace["__annotations__"][name] = annotation
            namespace[name] = copy(info)
    return type(f"{model.__name__}View", (model,), namespace)


def _tolerant(annotation: Any) -> Any:
    """`annotation` with every BaseModel in it replaced by its tolerant view."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return tolerant_view(annotation)
    origin = get_origin(annotation)
    if origin is None:
        return annotation
    args = get_args(annotation)
    if origin is Annotated:
        inner = _tolerant(args[0])
        return annotation if inner is args[0] else Annotated[(inner, *args[1:])]
    new_args = tuple(_tolerant(a) for a in args)
    if all(n is a for n, a in zip(new_args, args, strict=True)):
        return annotation
    if origin in (Union, types.UnionType):
        return typing.Union[new_args]  # noqa: UP007 - built from a tuple
    return origin[new_args]

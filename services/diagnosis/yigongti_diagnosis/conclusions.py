"""The code lists of conclusions a reader may sign (policy/conclusions.yaml)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from importlib.resources import files

import yaml


class UnknownConclusion(ValueError):
    """A conclusion code not on the modality's list (HTTP 422)."""


@cache
def lists() -> dict:
    return yaml.safe_load((files("yigongti_diagnosis") / "policy" / "conclusions.yaml")
                          .read_text("utf-8"))


def codes_for(modality: str) -> dict:
    return lists()["ECG" if modality == "ECG" else "IMAGING"]


def check(modality: str, codes: Iterable[str]) -> None:
    allowed = codes_for(modality)
    codes = list(codes)
    if len(set(codes)) != len(codes) or any(c not in allowed for c in codes):
        raise UnknownConclusion("a conclusion is not on the modality's code list")

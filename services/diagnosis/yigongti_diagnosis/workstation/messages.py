"""The workstation's message table (messages.yaml): every label the pages show,
looked up by key in the configured language (WORKSTATION_LANGUAGE, default zh)."""

from __future__ import annotations

import os
from functools import cache
from importlib.resources import files

import yaml

DEFAULT_LANGUAGE = "zh"


@cache
def table() -> dict[str, dict[str, str]]:
    return yaml.safe_load((files("yigongti_diagnosis.workstation") / "messages.yaml")
                          .read_text("utf-8"))


def language() -> str:
    return os.environ.get("WORKSTATION_LANGUAGE", DEFAULT_LANGUAGE)


def m(key: str, **values: object) -> str:
    """The label `key`; a key missing from the table shows as itself (a code, never
    a blank), and a language missing for a key falls back to the default."""
    entry = table().get(key)
    if entry is None:
        return key
    text = entry.get(language()) or entry[DEFAULT_LANGUAGE]
    return text.format(**values) if values else text


def has(key: str) -> bool:
    return key in table()

"""The test catalogue (data in policy/catalogue.yaml): what the lab can do."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import yaml
from yigongti_contracts.lab.codes import TubeType


@dataclass(frozen=True)
class CatalogueTest:
    code: str
    loinc: str | None
    tube: TubeType
    unit: str | None


@cache
def load_catalogue() -> dict[str, CatalogueTest]:
    raw = yaml.safe_load((files("yigongti_lab") / "policy" / "catalogue.yaml").read_text())
    return {
        t["code"]: CatalogueTest(t["code"], t.get("loinc"), TubeType(t["tube"]), t.get("unit"))
        for t in raw["tests"]
    }

"""Export the JSON Schema of every frozen contract to contracts/schemas/.

    python -m yigongti_contracts.export          # write <ce_type>.json files
    python -m yigongti_contracts.export --check  # exit 1 if a file differs

The files are the frozen reference: tests compare the current models with
them (compat.py) so a new writer never breaks an old reader.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .base import StrictModel
from .registry import FROZEN

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_of(model: type[StrictModel]) -> dict[str, Any]:
    """The JSON Schema of a contract's payload, with its ce_type and key field."""
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = DIALECT
    schema["$id"] = f"urn:yigongti:schema:{model.CE_TYPE}"
    schema["x-ce-type"] = model.CE_TYPE
    schema["x-key-field"] = model.KEY_FIELD
    return schema


def render(schema: dict[str, Any]) -> str:
    """Stable text: sorted keys, two-space indent, UTF-8, final newline."""
    return json.dumps(schema, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def path_for(ce_type: str, directory: Path = SCHEMA_DIR) -> Path:
    return directory / f"{ce_type}.json"


def current() -> dict[str, str]:
    """ce_type → rendered schema of every frozen model."""
    return {ce_type: render(schema_of(model)) for ce_type, model in sorted(FROZEN.items())}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    differ = []
    for ce_type, text in current().items():
        path = path_for(ce_type)
        old = path.read_text("utf-8") if path.exists() else None
        if old == text:
            continue
        differ.append(path.name)
        if not check:
            path.write_text(text, "utf-8")
    known = {path_for(t).name for t in FROZEN}
    orphans = sorted(p.name for p in SCHEMA_DIR.glob("*.json") if p.name not in known)
    for name in orphans:
        print(f"warning: {name} has no model (removing a frozen contract breaks readers)")
    verb = "differ" if check else "written"
    print(f"{len(differ)} schema file(s) {verb}, {len(FROZEN)} frozen contracts")
    return 1 if check and differ else 0


if __name__ == "__main__":
    raise SystemExit(main())

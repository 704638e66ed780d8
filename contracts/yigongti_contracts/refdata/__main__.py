"""Check that every quoted seed phrase in changji.yaml occurs in its seed.

    python -m yigongti_contracts.refdata /path/to/shared/seeds

Whitespace is removed from the seed before matching (the seeds are newspaper
columns broken across lines). Exits 1 listing the quotes not found.
"""

from __future__ import annotations

import re
import sys
from importlib import resources
from pathlib import Path

import yaml

_QUOTE = re.compile(r"(\d{3}_[0-9a-f]{16}\.txt)|«([^»]+)»")


def unmatched_quotes(data: object, seeds: dict[str, str]) -> list[str]:
    """Quotes (as "file: phrase") that do not occur in their seed."""
    missing: list[str] = []

    def check(source: str) -> None:
        current = None
        for m in _QUOTE.finditer(source):
            if m.group(1):
                current = m.group(1)
                continue
            phrase = re.sub(r"\s+", "", m.group(2))
            if current is None or phrase not in seeds.get(current, ""):
                missing.append(f"{current}: {m.group(2)}")

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("source", "level_source") and isinstance(value, str):
                    check(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data)
    return missing


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    seeds = {
        p.name: re.sub(r"\s+", "", p.read_text("utf-8")) for p in Path(args[0]).glob("*.txt")
    }
    text = resources.files("yigongti_contracts.refdata").joinpath("changji.yaml").read_text()
    missing = unmatched_quotes(yaml.safe_load(text), seeds)
    for item in missing:
        print(f"not in seed: {item}")
    print(f"{'FAIL' if missing else 'ok'}: {len(missing)} quote(s) not found")
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())

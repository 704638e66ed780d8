"""The README is the front door: its event catalogue is what the contracts say
(`make schemas` writes it), and it cites nothing outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

from yigongti_contracts import catalogue

README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_event_catalogue_is_what_make_schemas_writes():
    text = README.read_text("utf-8")
    assert catalogue.updated(text) == text, "run make schemas"


def test_every_contract_is_in_the_catalogue():
    from yigongti_contracts.registry import MODELS

    text = README.read_text("utf-8")
    assert [t for t in MODELS if f"`{t}`" not in text] == []


def test_the_readme_cites_nothing_outside_the_repository():
    text = README.read_text("utf-8")
    assert not re.search(r"\.\./shared|DESIGN(\.md)?\s*§|domain-rules\.md|seeds/", text)
    # Relative links point at files that exist.
    for target in re.findall(r"\]\((?!https?://|#)([^)]+)\)", text):
        assert (README.parent / target.split("#")[0]).exists(), target

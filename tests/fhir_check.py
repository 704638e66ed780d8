"""FHIR R4 validation for tests: FHIR.js (tests/fhir_validate.js) run once
over a list of resources. A missing node or package fails the test, never
skips it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from yigongti_contracts.fhir import dumps

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "fhir_validate.js"
PACKAGE = REPO / ".tools" / "node_modules" / "fhir"


def problems(resources: list[dict[str, Any]]) -> list[list[str]]:
    """Per resource, its validation errors ("Location: message"); [] when valid.
    Warnings (a LOINC code outside an example value set) are not errors."""
    node = shutil.which("node")
    if node is None or not PACKAGE.exists():
        pytest.fail("FHIR.js is missing: run `make setup` (npm and node are required)",
                    pytrace=False)
    # Written as the service writes them (decimals with their own digits).
    done = subprocess.run([node, str(SCRIPT)], input=dumps(resources),
                          capture_output=True, text=True, check=True, timeout=120)
    return [[f"{m['location']}: {m['message']}" for m in result["messages"]
             if m["severity"] == "error"]
            for result in json.loads(done.stdout)]

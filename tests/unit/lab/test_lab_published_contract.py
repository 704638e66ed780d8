"""What contracts/terminal/ publishes about the lab is what the lab does: its
catalogue, its reason codes (read from its source), how long a parked record
waits, and the dev terminals the published examples assume."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import yigongti_lab
from yigongti_contracts import examples, terminal
from yigongti_contracts.common import PLATFORM_REJECTION_REASONS
from yigongti_contracts.lab import rejections, v1
from yigongti_deploy import devkeys
from yigongti_lab import parking
from yigongti_lab.catalogue import load_catalogue
from yigongti_lab.domain import SpecimenState, TestStatus

DIR = terminal.TERMINAL_DIR
CONTRACT = json.loads((DIR / terminal.CONTRACT_FILE).read_text("utf-8"))
CATALOGUE = json.loads((DIR / terminal.CATALOGUE_FILE).read_text("utf-8"))
LAB_SOURCE = Path(yigongti_lab.__file__).parent


def test_the_published_catalogue_is_the_labs() -> None:
    tests = load_catalogue()
    orderable = {t["code"]: t for t in CATALOGUE["orderable"]}
    assert set(orderable) == {c for c, t in tests.items() if t.orderable}
    within = {t["code"] for t in CATALOGUE["reported_within_panels"]}
    assert within == {c for c, t in tests.items() if not t.orderable}
    for entry in (*CATALOGUE["orderable"], *CATALOGUE["reported_within_panels"]):
        test = tests[entry["code"]]
        assert (entry["tube"], entry["unit"], entry["loinc"]) == (
            test.tube.value, test.unit, test.loinc)
        assert tuple(entry["analyser_codes"]) == test.analyser_codes
    order = examples.EXAMPLES[v1.LabOrderPlaced]
    assert {t.code for t in order.tests} <= set(orderable)


def _refusal_codes() -> tuple[set[str], set[str]]:
    """(codes, templates) the lab's intake code refuses with: the first argument of
    Rejection(...), the code given to reject(conn, origin, code, ...), and the
    code of each (field, code) problem (a refusal's reason is its first problem's
    code). f-strings come back as templates, e.g. "test_{}"."""
    codes: set[str] = set()
    templates: set[str] = set()

    def take(node: ast.AST) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            codes.add(node.value)
        elif isinstance(node, ast.JoinedStr):
            templates.add("".join(v.value if isinstance(v, ast.Constant) else "{}"
                                  for v in node.values))

    for path in sorted(LAB_SOURCE.glob("*.py")):
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name == "Rejection" and node.args:
                take(node.args[0])
                if isinstance(node.args[0], ast.JoinedStr):
                    continue
            if name == "reject" and len(node.args) >= 3:
                take(node.args[2])
            if name in ("Rejection", "reject", "append") or path.name == "domain.py":
                for arg in ast.walk(node):
                    if isinstance(arg, ast.Tuple) and len(arg.elts) == 2:
                        take(arg.elts[1])
        if path.name == "domain.py":  # problems returned as list literals
            for node in ast.walk(tree):
                if isinstance(node, ast.Return):
                    for arg in ast.walk(node):
                        if isinstance(arg, ast.Tuple) and len(arg.elts) == 2:
                            take(arg.elts[1])
    return codes, templates


# What the lab's f-string codes become: a test's status that cannot be collected,
# and the states of a tube whose results are refused (results.py).
_EXPANSIONS = {
    "test_{}": {f"test_{s}" for s in (TestStatus.COLLECTED, TestStatus.RESULTED,
                                      TestStatus.CONFIRMED, TestStatus.VERIFIED,
                                      TestStatus.CANCELLED, TestStatus.AVOIDED)},
    "specimen_{}": {f"specimen_{s}" for s in (SpecimenState.REJECTED,
                                               SpecimenState.CANCELLED)},
}


def test_the_lab_refuses_only_with_published_codes_and_publishes_no_unused_one() -> None:
    codes, templates = _refusal_codes()
    assert templates == set(_EXPANSIONS)
    expanded = set().union(*_EXPANSIONS.values())
    # Field-level codes that are never a reason: the lab's refusals name them in
    # `fields` beside a reason code that is the same problem's.
    field_only = {"exists", "unknown", "not_found"}
    used = (codes - field_only) | expanded
    allowed = PLATFORM_REJECTION_REASONS | set(rejections.REASONS)
    assert used - allowed == set(), "publish these in contracts/yigongti_contracts/lab/rejections.py"
    unused = set(rejections.REASONS) - used
    assert unused == set(), "published but never used by the lab"
    assert CONTRACT["reason_codes"]["services"]["lab"] == dict(sorted(rejections.REASONS.items()))


def test_the_published_parking_is_the_labs() -> None:
    parked = CONTRACT["services"]["lab"]["parked"]
    for ce_type, entry in parked.items():
        assert parking.grace(ce_type).total_seconds() == entry["grace_minutes"] * 60
    assert v1.CriticalValueAck.CE_TYPE not in parked  # refused at once, never parked
    park_raisers = {p.name for p in LAB_SOURCE.glob("*.py") if "raise Park(" in p.read_text()}
    assert park_raisers == {"handlers.py", "results.py"}


def test_the_examples_assume_the_dev_terminals() -> None:
    senders = {m.__name__: s for m, s in examples.EXAMPLE_SENDERS.items()}
    assert senders["LabOrderPlaced"] == (devkeys.DEMO_TERMINAL_ID, devkeys.DEMO_INSTITUTION_ID)
    assert senders["AnalyserResults"] == (devkeys.LIS_TERMINAL_ID, devkeys.LIS_INSTITUTION_ID)
    def lab(table) -> set:  # the tables hold the other services' examples too
        return {m for m in table if m.__module__ == v1.__name__}
    assert lab(examples.EXAMPLE_SENDERS) == set(v1.INTAKE) == lab(examples.EXAMPLE_OUTCOMES)
    sequence = CONTRACT["services"]["lab"]["examples"]["sequence"]
    assert [(e["terminal"], e["institution"]) for e in sequence] == [
        examples.EXAMPLE_SENDERS[m] for m in v1.INTAKE]

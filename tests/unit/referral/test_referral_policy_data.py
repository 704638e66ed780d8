"""The referral policy tables as data: every row has a source, the code lists
match the enums, and the numbers are the ones the design and the sources give."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from yigongti_contracts.refdata import Capability
from yigongti_contracts.refdata import load as load_refdata
from yigongti_referral import codes
from yigongti_referral.codes import ChronicClass, Direction, Urgency
from yigongti_referral.policy import load_policy, read

POLICY_FILES = ("deadlines.yaml", "validity.yaml", "follow_up.yaml", "rerouting.yaml",
                "codes.yaml", "suggestions.yaml")


def _sourced(text: Any) -> bool:
    """A source names a document, or says "assumed: <why>" (never a bare "assumed")."""
    if not isinstance(text, str) or len(text.strip()) < 8:
        return False
    return not re.search(r"assumed(?!: \S)", text)


def _sourced_nodes(node: Any, path: str = ""):
    """Every mapping that holds a value (a table row or a setting), with its path."""
    if isinstance(node, dict):
        if any(not isinstance(v, dict | list) for k, v in node.items()
               if k not in ("source",) and not k.endswith("_source")) and path:
            yield path, node
        for key, value in node.items():
            yield from _sourced_nodes(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _sourced_nodes(item, f"{path}[{i}]")


@pytest.mark.parametrize("name", POLICY_FILES)
def test_every_value_has_a_source(name) -> None:
    missing = [path for path, row in _sourced_nodes(read(name))
               if not _sourced(row.get("source"))]
    assert not missing, f"{name}: without a source: {missing}"


def test_every_top_level_setting_has_its_source() -> None:
    rerouting = read("rerouting.yaml")
    for key in ("directions", "at_once", "alternative"):
        assert _sourced(rerouting[f"{key}_source"]), key


@pytest.mark.parametrize("table,enum", [
    ("upward_reasons", codes.UpwardReason), ("downward_reasons", codes.DownwardReason),
    ("decline_reasons", codes.DeclineReason), ("cancel_reasons", codes.CancelReason),
    ("closure_outcomes", codes.ClosureOutcome), ("follow_up_findings", codes.FollowUpFinding),
    ("lost_reasons", codes.LostReason),
])
def test_code_lists_match_the_enums(table, enum) -> None:
    assert [row["code"] for row in read("codes.yaml")[table]] == [e.value for e in enum]


def test_the_upward_and_downward_reasons_are_those_of_domain_rules_7() -> None:
    table = read("codes.yaml")
    assert len(table["upward_reasons"]) == 7 and len(table["downward_reasons"]) == 6
    assert all("domain-rules.md §7" in row["source"]
               for row in table["upward_reasons"] + table["downward_reasons"])


def test_acceptance_deadlines_are_the_designs() -> None:
    policy = load_policy()
    assert policy.acceptance == {Urgency.emergency: timedelta(minutes=30),
                                 Urgency.urgent: timedelta(hours=4),
                                 Urgency.routine: timedelta(hours=48)}


def test_transit_alert_comes_before_the_loss_and_grows_with_less_urgency() -> None:
    transit = load_policy().transit
    order = [Urgency.emergency, Urgency.urgent, Urgency.routine]
    assert all(transit[u].overdue < transit[u].lost for u in order)
    assert [transit[u].lost for u in order] == sorted(transit[u].lost for u in order)


def test_validity_is_three_months_and_one_admission_a_year_for_chronic_classes() -> None:
    policy = load_policy()
    assert (policy.validity.months, policy.validity.admissions) == (3, 1)
    assert {c: (v.months, v.admissions) for c, v in policy.chronic_validity.items()} == \
        {c: (12, None) for c in ChronicClass}


def test_follow_up_rounds_default_to_day_7_and_day_30() -> None:
    assert [r.day for r in load_policy().rounds] == [7, 30]


def test_only_emergencies_reroute_at_once_and_only_upward() -> None:
    policy = load_policy()
    assert policy.reroute_at_once == {Urgency.emergency}
    assert policy.reroute_directions == {Direction.up}


def test_every_trigger_has_somewhere_to_go() -> None:
    refdata = load_refdata()
    for trigger in load_policy().triggers:
        assert Capability(trigger.capability) in Capability
        assert any(refdata.has_capability(i.id, trigger.capability)
                   for i in refdata.institutions), trigger.finding


def test_the_reference_scenarios_stemi_is_on_the_list() -> None:
    trigger = load_policy().trigger_for("ECG", "I21.0")
    assert trigger is not None and trigger.capability is Capability.chest_pain_centre
    assert load_policy().trigger_for("ECG", "I21.4") is None  # NSTEMI

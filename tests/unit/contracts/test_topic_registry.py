"""The topic registry: names, partitions, keys, owners and readers (DESIGN §2)."""

from __future__ import annotations

import pytest
from yigongti_contracts.topics import (
    BY_NAME,
    SERVICES,
    TOPICS,
    consumed_by,
    topic,
    topic_name,
    topics_for,
)


def test_every_service_has_intake_events_and_dlq() -> None:
    for service in SERVICES:
        assert [t.name for t in topics_for(service)] == [
            f"{service}.intake.v1", f"{service}.events.v1", f"{service}.dlq.v1"
        ]
    assert len(TOPICS) == 12 and len(BY_NAME) == 12


@pytest.mark.parametrize("service,key", [
    ("lab", "order_id"), ("diagnosis", "request_id"), ("referral", "referral_id"),
    ("settlement", "settlement_id"),
])
def test_records_are_keyed_by_the_aggregate_id(service: str, key: str) -> None:
    intake, events, dlq = topics_for(service)
    assert intake.key == events.key == key
    assert dlq.key == "original_key"


def test_partitions() -> None:
    for t in TOPICS:
        assert t.partitions == (1 if t.kind == "dlq" else 6)


def test_lab_topics() -> None:
    assert topic("lab.intake.v1").consumers == ("lab",)
    assert set(topic("lab.events.v1").consumers) == {"referral", "settlement"}
    assert topic("lab.dlq.v1").owner == "lab"


def test_readers_follow_the_design_table() -> None:
    assert [t.name for t in consumed_by("lab")] == ["lab.intake.v1"]
    assert {t.name for t in consumed_by("referral")} == {
        "referral.intake.v1", "diagnosis.events.v1", "lab.events.v1"}
    assert {t.name for t in consumed_by("settlement")} == {
        "settlement.intake.v1", "lab.events.v1", "diagnosis.events.v1"}


def test_only_the_owner_writes_its_events() -> None:
    for t in TOPICS:
        if t.kind == "events":
            assert t.owner not in t.consumers


@pytest.mark.parametrize("prefix,expected", [
    ("", "lab.intake.v1"), ("t42", "t42.lab.intake.v1"), ("t42.", "t42.lab.intake.v1"),
    ("run-7-", "run-7-lab.intake.v1"), ("a_", "a_lab.intake.v1"),
])
def test_topic_name_prefixes(prefix: str, expected: str) -> None:
    assert topic_name("lab.intake.v1", prefix) == expected


@pytest.mark.parametrize("prefix", ["has space", "ünï", "a/b", "x" * 249])
def test_illegal_topic_names_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError):
        topic_name("lab.intake.v1", prefix)


def test_unknown_service() -> None:
    with pytest.raises(KeyError):
        topics_for("pharmacy")

"""Lab rules for the first slice: is an order acceptable, is a collection
consistent with its order. Pure functions; each returns the problems as
(field path, reason code) pairs, never values."""

from __future__ import annotations

from collections.abc import Mapping

from yigongti_contracts.lab.codes import ProcessingState
from yigongti_contracts.lab.v1 import LabOrderPlaced, SpecimenCollected
from yigongti_contracts.refdata import RefData, RefDataError

from .catalogue import CatalogueTest

Problem = tuple[str, str]


class OrderStatus:
    ACCEPTED = "accepted"


class SpecimenState:
    COLLECTED = "collected"
    IN_TRANSIT = "in_transit"
    RECEIVED = "received"
    REJECTED = "rejected"
    RESULTED = "resulted"
    CONFIRMED = "confirmed"
    VERIFIED = "verified"
    AMENDED = "amended"
    CANCELLED = "cancelled"

    # Before receipt a dispatch still moves the tube; after it, nothing does.
    DISPATCHABLE = (COLLECTED,)
    RECEIVABLE = (COLLECTED, IN_TRANSIT)


class TestStatus:
    ORDERED = "ordered"
    COLLECTED = "collected"
    RECOLLECT = "recollect"  # its tube was rejected: a new tube is awaited
    RESULTED = "resulted"
    CONFIRMED = "confirmed"
    VERIFIED = "verified"
    CANCELLED = "cancelled"
    AVOIDED = "avoided"

    COLLECTABLE = (ORDERED, RECOLLECT)
    # A resulted test may still be cancelled (its charge is reversed); once a
    # technologist confirmed it, the result stands.
    CANCELLABLE = (ORDERED, COLLECTED, RECOLLECT, RESULTED)


def order_problems(
    order: LabOrderPlaced,
    catalogue: Mapping[str, CatalogueTest],
    refdata: RefData,
    sender_institution: str | None,
) -> list[Problem]:
    problems: list[Problem] = []
    try:
        refdata.institution(order.ordering_institution)
        refdata.lab_centre_for(order.ordering_institution)
    except RefDataError:
        problems.append(("ordering_institution", "unknown_institution"))
    if sender_institution is not None and sender_institution != order.ordering_institution:
        problems.append(("ordering_institution", "forbidden_institution"))
    seen: set[str] = set()
    for i, test in enumerate(order.tests):
        if test.code not in catalogue:
            problems.append((f"tests.{i}.code", "unknown_test"))
        elif not catalogue[test.code].orderable:  # a panel's line: order the panel
            problems.append((f"tests.{i}.code", "not_orderable"))
        if test.code in seen:
            problems.append((f"tests.{i}.code", "duplicate_test"))
        seen.add(test.code)
    return problems


def collection_problems(
    specimen: SpecimenCollected,
    *,
    ordering_institution: str,
    test_status: Mapping[str, str],
    catalogue: Mapping[str, CatalogueTest],
    sender_institution: str | None,
) -> list[Problem]:
    problems: list[Problem] = []
    if sender_institution is not None and sender_institution != ordering_institution:
        problems.append(("order_id", "forbidden_institution"))
    for i, code in enumerate(specimen.tests):
        status = test_status.get(code)
        if status is None:
            problems.append((f"tests.{i}", "test_not_ordered"))
        elif status not in TestStatus.COLLECTABLE:
            problems.append((f"tests.{i}", f"test_{status}"))
        elif catalogue[code].tube != specimen.tube:
            problems.append(("tube", "wrong_tube"))
    if specimen.centrifuged_at is not None and specimen.centrifuged_at < specimen.collected_at:
        problems.append(("centrifuged_at", "before_collection"))
    return problems


def processing_state(specimen: SpecimenCollected) -> ProcessingState:
    return (ProcessingState.centrifuged if specimen.centrifuged_at is not None
            else ProcessingState.whole_blood)


def tests_to_cancel(requested: tuple[str, ...] | None,
                    test_status: Mapping[str, str]) -> tuple[list[str], list[Problem]]:
    """Which tests a cancellation takes (all still cancellable when none are
    named), and what stops it: a test not on the order, or already resulted."""
    if requested is None:
        chosen = [c for c, s in test_status.items() if s in TestStatus.CANCELLABLE]
        return chosen, ([] if chosen else [("tests", "nothing_to_cancel")])
    problems: list[Problem] = []
    for i, code in enumerate(requested):
        status = test_status.get(code)
        if status is None:
            problems.append((f"tests.{i}", "test_not_ordered"))
        elif status == TestStatus.CANCELLED:
            problems.append((f"tests.{i}", "test_cancelled"))
        elif status not in TestStatus.CANCELLABLE:
            problems.append((f"tests.{i}", "test_already_resulted"))
    return list(requested), problems


def order_status(test_status: Mapping[str, str]) -> str:
    """The order's status, derived from its tests (DESIGN §5)."""
    live = [s for s in test_status.values() if s not in (TestStatus.CANCELLED, TestStatus.AVOIDED)]
    if not live:
        return "cancelled" if TestStatus.CANCELLED in test_status.values() else "completed"
    if all(s == TestStatus.VERIFIED for s in live):
        return "completed"
    if any(s == TestStatus.VERIFIED for s in live):
        return "partially_reported"
    if all(s == TestStatus.ORDERED for s in live):
        return "accepted"
    if any(s in (TestStatus.RESULTED, TestStatus.CONFIRMED) for s in live):
        return "in_testing"
    return "collecting"

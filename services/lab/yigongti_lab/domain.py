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


class TestStatus:
    ORDERED = "ordered"
    COLLECTED = "collected"


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
        elif status != TestStatus.ORDERED:
            problems.append((f"tests.{i}", f"test_{status}"))
        elif catalogue[code].tube != specimen.tube:
            problems.append(("tube", "wrong_tube"))
    if specimen.centrifuged_at is not None and specimen.centrifuged_at < specimen.collected_at:
        problems.append(("centrifuged_at", "before_collection"))
    return problems


def processing_state(specimen: SpecimenCollected) -> ProcessingState:
    return (ProcessingState.centrifuged if specimen.centrifuged_at is not None
            else ProcessingState.whole_blood)

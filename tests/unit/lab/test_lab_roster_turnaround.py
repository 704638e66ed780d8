"""Critical-value escalation roster (policy/oncall.yaml) and turnaround targets
(policy/turnaround.yaml)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from yigongti_contracts.lab.codes import Priority
from yigongti_contracts.refdata import Kind
from yigongti_contracts.refdata import load as load_refdata
from yigongti_lab.catalogue import Discipline
from yigongti_lab.roster import (
    OrderingRole,
    Role,
    UnknownLabCentre,
    escalation_interval,
    ordering_contact,
    ordering_side,
    roster,
    who_next,
)
from yigongti_lab.turnaround import benchmark, interval, pre_analytic_benchmark, target

CENTRE = "652325-L01"


def test_escalation_interval_is_fifteen_minutes():
    assert escalation_interval() == timedelta(minutes=15)


@pytest.mark.parametrize(("attempt", "staff_id", "role"), [
    (0, "652325-L01-TEC1", Role.technologist_on_duty),
    (1, "652325-L01-PHY1", Role.lab_physician),
    (2, "652325-L01-HEAD", Role.department_head),
    (3, "652325-H01-MAO", Role.medical_affairs_office),
    (4, "652325-L01-TEC1", Role.technologist_on_duty),     # cycles: repeat until acknowledged
    (5, "652325-L01-PHY1", Role.lab_physician),
    (11, "652325-H01-MAO", Role.medical_affairs_office),
])
def test_who_next_cycles_through_the_roster(attempt, staff_id, role):
    entry = who_next(CENTRE, attempt)
    assert (entry.staff_id, entry.role) == (staff_id, role)


def test_who_next_refuses_bad_input():
    with pytest.raises(ValueError):
        who_next(CENTRE, -1)
    with pytest.raises(UnknownLabCentre):
        who_next("652325-H01", 0)


def test_every_lab_centre_of_the_refdata_has_a_roster_in_role_order():
    order = list(Role)
    for centre in load_refdata().of_kind(Kind.lab_centre):
        roles = [e.role for e in roster(centre.id)]
        assert roles == sorted(roles, key=order.index)
        assert roles[0] is Role.technologist_on_duty


def test_ordering_side():
    assert ordering_side()[0] is OrderingRole.ordering_clinician
    assert ordering_contact(0) is OrderingRole.ordering_clinician
    assert ordering_contact(len(ordering_side())) is OrderingRole.ordering_clinician
    with pytest.raises(ValueError):
        ordering_contact(-1)


@pytest.mark.parametrize(("discipline", "priority", "minutes"), [
    (Discipline.haematology, Priority.stat, 30),
    (Discipline.haematology, Priority.routine, 60),
    (Discipline.chemistry, Priority.stat, 60),
    (Discipline.chemistry, Priority.urgent, 120),
    (Discipline.immunoassay, Priority.stat, 60),
    (Discipline.coagulation, Priority.stat, 60),
    (Discipline.coagulation, Priority.routine, 240),
    (Discipline.blood_gas, Priority.routine, 60),
    (Discipline.microbiology, Priority.stat, None),
])
def test_turnaround_target(discipline, priority, minutes):
    expected = None if minutes is None else timedelta(minutes=minutes)
    assert target(discipline, priority) == expected


def test_every_discipline_and_priority_has_a_target_row():
    for discipline in Discipline:
        for priority in Priority:
            target(discipline, priority)  # KeyError if a row is missing


def test_benchmarks():
    assert interval() == "receipt_to_verification"
    chem = benchmark(Discipline.chemistry)
    assert chem is not None and chem.p90 == timedelta(minutes=60)
    assert benchmark(Discipline.blood_gas) is None
    assert pre_analytic_benchmark().p90 == timedelta(minutes=20)

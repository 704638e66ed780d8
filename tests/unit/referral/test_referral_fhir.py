"""The referral as FHIR R4 (issue 12 item 9): a ServiceRequest and a Task per
case, valid R4 (FHIR.js) in every state, with Task.status after the HL7 BSeR
state machine and where the patient is in businessStatus."""

from __future__ import annotations

import pytest
from fhir_check import problems
from referralcases import (
    World,
    accept,
    arrived,
    cancelled,
    decline,
    departed,
    discharged,
    down,
    opened,
    up,
)
from yigongti_contracts.refdata import Capability
from yigongti_referral.codes import CaseState, Urgency
from yigongti_referral.fhir import referral_bundle


def _world_in(state: str) -> World:
    if state == "requested":
        return opened(urgency=Urgency.routine)
    if state == "accepted":
        return opened(accept(), urgency=Urgency.routine)
    if state == "in_transit":
        return opened(accept(), departed(), urgency=Urgency.routine)
    if state == "received":
        return opened(accept(), departed(), arrived(), urgency=Urgency.routine)
    if state == "closed":
        return opened(accept(), departed(), arrived(), discharged(), urgency=Urgency.routine)
    if state == "declined":
        return opened(decline(), urgency=Urgency.routine)
    if state == "withdrawn":
        return opened(cancelled(), urgency=Urgency.routine)
    w = opened(urgency=Urgency.routine)
    if state == "expired":
        w.fire("R1", "acceptance")
    elif state == "lost":
        w.send(accept())
        w.send(departed())
        w.fire_all()
    return w


EXPECTED = {
    "requested": ("requested", None), "accepted": ("accepted", None),
    "in_transit": ("in-progress", "in-transit"), "received": ("in-progress", "patient-received"),
    "closed": ("completed", None), "declined": ("rejected", None),
    "expired": ("failed", "expired"), "lost": ("failed", "lost"),
    "withdrawn": ("cancelled", None),
}


def test_every_state_is_valid_fhir_r4_with_the_bser_task_status() -> None:
    bundles = []
    for state, (status, business) in EXPECTED.items():
        case = _world_in(state).cases["R1"]
        assert case.state is CaseState(state)
        bundle = referral_bundle(case)
        request, task = (e["resource"] for e in bundle["entry"])
        assert task["status"] == status, state
        assert (task.get("businessStatus") or {}).get("coding", [{}])[0].get("code") == business
        assert task["basedOn"][0]["reference"] == bundle["entry"][0]["fullUrl"]
        assert request["intent"] == "order" and request["category"][0]["coding"][0]["code"] == \
            "3457005"
        bundles.append(bundle)
    down_case = opened(accept("D1"), arrived("D1"), request=down()).cases["D1"]
    bundles.append(referral_bundle(down_case))
    assert problems(bundles) == [[]] * len(bundles)


def test_a_reroute_child_replaces_its_parent() -> None:
    w = opened(decline(), urgency=Urgency.routine)
    proposed = w.cases["R1"].proposed_institution
    w.send(up("R2", to=proposed, urgency=Urgency.routine, parent_referral_id="R1",
              capability=Capability.chest_pain_centre))
    request = referral_bundle(w.cases["R2"])["entry"][0]["resource"]
    assert request["replaces"][0]["identifier"]["value"] == "R1"
    assert problems([referral_bundle(w.cases["R2"])]) == [[]]


@pytest.mark.parametrize("urgency,priority", [(Urgency.emergency, "stat"),
                                              (Urgency.routine, "routine")])
def test_priority(urgency, priority) -> None:
    case = opened(urgency=urgency).cases["R1"]
    assert referral_bundle(case)["entry"][1]["resource"]["priority"] == priority

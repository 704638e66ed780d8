"""FHIR R4 Task status of a referral (issue 12 item 9), following the HL7 BSeR
(Bidirectional Services eReferral) state machine, which derives from IHE 360X.

`Task.status` says where the request stands; where the patient is — in
transit, or received — is `Task.businessStatus`, because `Task.status =
received` means the *request* was received, not the patient. A pure table; the
FHIR resources are built where the service serves them.
"""

from __future__ import annotations

from yigongti_contracts.fhir import BASE

from .codes import CaseState

# Our code system for Task.businessStatus (a CodeableConcept).
BUSINESS_STATUS_SYSTEM = f"{BASE}/CodeSystem/referral-business-status"

# state → (Task.status, Task.businessStatus code or None)
TASK_STATUS: dict[CaseState, tuple[str, str | None]] = {
    CaseState.requested: ("requested", None),
    CaseState.accepted: ("accepted", None),
    CaseState.declined: ("rejected", None),
    CaseState.expired: ("failed", "expired"),
    CaseState.lost: ("failed", "lost"),
    CaseState.in_transit: ("in-progress", "in-transit"),
    CaseState.received: ("in-progress", "patient-received"),
    CaseState.closed: ("completed", None),
    CaseState.withdrawn: ("cancelled", None),
}


def task_status(state: CaseState) -> tuple[str, str | None]:
    return TASK_STATUS[CaseState(state)]

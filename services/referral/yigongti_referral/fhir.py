"""A referral as HL7 FHIR R4 (issue 12 item 9): a ServiceRequest (the
referral: intent order, category "referral", the reason and urgency as
codes, sender and receiver) and a Task fulfilling it, whose status follows
the HL7 BSeR state machine (task_status.py). `Task.status` says where the
request stands; where the patient is — in transit, received — is
`Task.businessStatus`, because `Task.status = received` means the request
was received, not the patient. A re-routed case names its parent in
`ServiceRequest.replaces`, so the chain reads in FHIR too."""

from __future__ import annotations

from typing import Any

from yigongti_contracts.fhir import (
    BASE,
    bundle,
    code_system,
    coding,
    concept,
    identifier,
    instant,
    organization,
    patient,
    practitioner,
    ref,
    sid,
)
from yigongti_contracts.fhir import dumps as fhir_dumps

from .case import Case
from .codes import Direction, Urgency
from .task_status import BUSINESS_STATUS_SYSTEM, task_status

REFERRAL = sid("referral")
TASK = sid("referral-task")
SNOMED = "http://snomed.info/sct"
# SNOMED CT 3457005 "Patient referral" (the BSeR ServiceRequest's category).
REFERRAL_CATEGORY = coding(SNOMED, "3457005", "Patient referral")
# ServiceRequest.priority: routine | urgent | asap | stat.
PRIORITY = {Urgency.routine: "routine", Urgency.urgent: "urgent", Urgency.emergency: "stat"}
# ServiceRequest.status by case state: active while the referral is live.
REQUEST_STATUS = {"requested": "active", "accepted": "active", "in_transit": "active",
                  "received": "active", "closed": "completed", "declined": "revoked",
                  "expired": "revoked", "withdrawn": "revoked", "lost": "revoked"}

dumps = fhir_dumps


def service_request(case: Case) -> dict[str, Any]:
    r = case.opened_request()
    reason_system = code_system("referral-reason-" + ("upward" if r.direction is Direction.up
                                                       else "downward"))
    out: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "identifier": [identifier(REFERRAL, case.referral_id)],
        "status": REQUEST_STATUS[case.state.value],
        "intent": "order",
        "category": [concept(REFERRAL_CATEGORY)],
        "priority": PRIORITY[r.urgency],
        "code": concept(coding(code_system("referral-direction"), r.direction.value)),
        "subject": patient(r.patient_ref),
        "authoredOn": instant(r.requested_at),
        "requester": practitioner(r.requested_by),
        "performer": [organization(r.to_institution)],
        "reasonCode": [concept(coding(reason_system, r.reason.value))],
    }
    if r.parent_referral_id:
        out["replaces"] = [ref("ServiceRequest", REFERRAL, r.parent_referral_id)]
    if r.required_capability is not None:
        out["orderDetail"] = [concept(coding(code_system("capability"),
                                             r.required_capability.value))]
    if case.valid_until is not None and case.opened_at is not None:
        out["occurrencePeriod"] = {"start": instant(case.opened_at),
                                   "end": instant(case.valid_until)}
    if r.care_plan is not None:
        out["note"] = [{"text": "care plan: diagnoses " + ", ".join(r.care_plan.diagnoses)}]
    return out


def task(case: Case) -> dict[str, Any]:
    r = case.opened_request()
    status, business = task_status(case.state)
    out: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [identifier(TASK, case.referral_id)],
        "basedOn": [ref("ServiceRequest", REFERRAL, case.referral_id)],
        "status": status,
        "intent": "order",
        "priority": PRIORITY[r.urgency],
        "code": concept(coding("http://hl7.org/fhir/CodeSystem/task-code", "fulfill")),
        "for": patient(r.patient_ref),
        "authoredOn": instant(case.opened_at or r.requested_at),
        "requester": organization(r.from_institution),
        "owner": organization(r.to_institution),
    }
    if business is not None:
        out["businessStatus"] = concept(coding(BUSINESS_STATUS_SYSTEM, business))
    if case.lost_reason is not None:
        out["statusReason"] = concept(coding(code_system("referral-lost-reason"),
                                             case.lost_reason.value))
    if case.accept_by is not None and case.state.value == "requested":
        out["restriction"] = {"period": {"end": instant(case.accept_by)}}
    if case.outcome is not None:
        out["output"] = [{"type": concept(coding(code_system("referral-output"), "outcome")),
                          "valueCodeableConcept": concept(coding(
                              code_system("referral-closure-outcome"), case.outcome.value))}]
        if case.discharge_summary_id:
            out["output"].append({
                "type": concept(coding(code_system("referral-output"), "discharge-summary")),
                "valueIdentifier": identifier(sid("discharge-summary"),
                                              case.discharge_summary_id)})
    return out


def referral_bundle(case: Case) -> dict[str, Any]:
    return bundle([service_request(case), task(case)])


__all__ = ["BASE", "dumps", "referral_bundle"]

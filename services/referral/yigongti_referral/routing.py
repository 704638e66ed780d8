"""Who may refer to whom, where a failed upward referral goes next, and which
critical finding suggests a referral to where. Pure functions over the
reference data (refdata changji.yaml `referral`) and the policy tables."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime

from yigongti_contracts.refdata import CLINICAL_KINDS, Capability, Kind, RefData, RefDataError

from .codes import Direction, DownwardReason, Refusal, UpwardReason
from .events import ReferralSuggested
from .facts import CriticalFindingRaised, ReferralRequested
from .policy import Policy

Problem = tuple[str, Refusal]  # (field, reason code)

# Up means to a higher rank, down to a lower one (DESIGN §5; issue 12 item 2).
RANK = {Kind.village_clinic: 0, Kind.township_branch: 1, Kind.total_hospital: 2,
        Kind.prefecture_hospital: 3}

# Deterministic ids for what the service creates itself, so a replay makes the same.
_IDS = uuid.UUID("6f0c6a53-54a4-4f0e-9a44-2f4f8b8f5d0e")


def derived_id(kind: str, *parts: str) -> str:
    return str(uuid.uuid5(_IDS, "\x1f".join((kind, *parts))))


def _community(refdata: RefData, institution_id: str) -> str | None:
    """The total hospital an institution belongs to; None at prefecture level."""
    try:
        return refdata.total_hospital_for(institution_id).id
    except RefDataError:
        return None


def referral_problems(request: ReferralRequested, refdata: RefData, *,
                      rerouted: bool = False) -> list[Problem]:
    """What stops `request`: the institutions, the direction, the community,
    the capability, the reason and the care plan. `rerouted`: a re-route child,
    which may pass over the sender's own total hospital."""
    problems: list[Problem] = []
    insts = {}
    for field in ("from_institution", "to_institution"):
        try:
            insts[field] = refdata.institution(getattr(request, field))
        except KeyError:
            problems.append((field, Refusal.unknown_institution))
    if problems:
        return problems
    sender, receiver = insts["from_institution"], insts["to_institution"]
    for field, inst in insts.items():
        if inst.kind not in CLINICAL_KINDS:
            problems.append((field, Refusal.not_a_clinical_institution))
    if problems:
        return problems
    if sender.id == receiver.id:
        return [("to_institution", Refusal.same_institution)]

    up = request.direction is Direction.up
    if (RANK[receiver.kind] > RANK[sender.kind]) != up or RANK[receiver.kind] == RANK[sender.kind]:
        problems.append(("direction", Refusal.wrong_direction))
    elif Kind.prefecture_hospital not in (sender.kind, receiver.kind) and \
            _community(refdata, sender.id) != _community(refdata, receiver.id):
        problems.append(("to_institution", Refusal.outside_community))
    elif up and not rerouted and receiver.kind is Kind.prefecture_hospital and \
            sender.kind in (Kind.village_clinic, Kind.township_branch):
        own = refdata.total_hospital_for(sender.id)
        if request.required_capability is None or \
                refdata.has_capability(own.id, request.required_capability):
            problems.append(("to_institution", Refusal.skips_level))

    if request.required_capability is not None and \
            not refdata.has_capability(receiver.id, request.required_capability):
        problems.append(("to_institution", Refusal.lacks_capability))

    reasons = UpwardReason if up else DownwardReason
    if request.reason not in set(reasons):
        problems.append(("reason", Refusal.reason_not_for_direction))
    if not up and request.care_plan is None:
        problems.append(("care_plan", Refusal.care_plan_missing))
    return problems


def next_candidate(request: ReferralRequested, tried: tuple[str, ...], refdata: RefData,
                   policy: Policy, alternative: str | None = None) -> str | None:
    """The institution to propose after a decline or expiry: the receiver's
    named alternative if it can take the patient (policy `alternative_first`),
    else the next capable institution in the reference data's order; never
    one the chain already tried."""
    def fits(institution_id: str) -> bool:
        if institution_id in tried:
            return False
        candidate = replace(request, to_institution=institution_id)
        return not referral_problems(candidate, refdata, rerouted=True)

    if alternative is not None and policy.alternative_first and fits(alternative):
        return alternative
    for inst in refdata.upward_candidates(request.from_institution, request.required_capability):
        if fits(inst.id):
            return inst.id
    return None


def suggest(finding: CriticalFindingRaised, refdata: RefData, policy: Policy,
            now: datetime) -> ReferralSuggested | None:
    """A ReferralSuggested when the finding's conclusion is on the list
    (policy/suggestions.yaml) and the requesting institution lacks the
    capability it needs; None otherwise, or when no capable institution is
    known or the requesting institution is not in the reference data."""
    trigger = policy.trigger_for(finding.modality, finding.conclusion_code)
    if trigger is None:
        return None
    try:
        if refdata.has_capability(finding.requesting_institution, trigger.capability):
            return None
        candidates = refdata.upward_candidates(finding.requesting_institution, trigger.capability)
    except (KeyError, RefDataError):
        return None
    if not candidates:
        return None
    return ReferralSuggested(
        suggestion_id=derived_id("suggestion", finding.request_id, finding.conclusion_code),
        patient_ref=finding.patient_ref,
        from_institution=finding.requesting_institution,
        to_institution=candidates[0].id,
        capability=Capability(trigger.capability),
        finding=trigger.finding,
        modality=finding.modality,
        conclusion_code=finding.conclusion_code,
        urgency=trigger.urgency,
        diagnosis_request_id=finding.request_id,
        finding_raised_at=finding.raised_at,
        suggested_at=now,
    )

"""What the demo prints after the journey: the time each step took, the
chest-pain-centre measures the events give, the settlement breakdown, where
to open the diagnostician's page, and (--keep-running) a token and curl lines
to try."""

from __future__ import annotations

from datetime import datetime

from yigongti_kit.auth import issue_token

from .demo_journey import COUNTY, ECG_CENTRE, ECG_READER, TOWNSHIP_DOCTOR, Journey, place
from .demo_settle import breakdown


def _span(a: datetime | None, b: datetime | None) -> str:
    if a is None or b is None:
        return "not recorded"
    ms = (b - a).total_seconds() * 1000
    return f"{ms / 1000:.1f} s" if abs(ms) >= 1000 else f"{ms:.0f} ms"


def step_times(j: Journey) -> list[str]:
    return [f"step {s.number}  {s.title:<58} {s.ms or 0:8.0f} ms"
            + (f"  FAILED: {s.failed}" if s.failed else "") for s in j.timeline.steps]


def measures(j: Journey) -> list[str]:
    """Chest-pain-centre measures, each from the times two events carry;
    nothing the events do not record (no door-to-balloon: no event has it)."""
    f = j.facts
    fmc = f.get("first_medical_contact_at")
    door_in = f.get("door_in_at")
    return [
        f"first medical contact → first ECG      {_span(fmc, f.get('ecg_requested_at'))}"
        "   (IdentityVerified.verified_at, given as the request's first_medical_contact_at "
        "→ DiagnosisRequested.requested_at)",
        f"first ECG → diagnosis                  "
        f"{_span(f.get('ecg_requested_at'), f.get('diagnosed_at'))}"
        "   (DiagnosisRequested.requested_at → DiagnosisReported.signed_at)",
        f"critical finding → referral suggestion "
        f"{_span(f.get('finding_raised_at'), f.get('suggested_at'))}"
        "   (CriticalFindingRaised.raised_at → ReferralSuggested.suggested_at)",
        f"first medical contact → door-in        {_span(fmc, door_in)}"
        f"   (→ PatientReceived.arrived_at: door-in at {place(COUNTY)}, "
        f"{door_in.strftime('%H:%M:%S UTC') if door_in else 'not recorded'})",
    ]


def settlement(j: Journey) -> list[str]:
    done = j.facts.get("settlement")
    return breakdown(done) if done else ["no settlement"]


def workstation(j: Journey, keep_running: bool) -> list[str]:
    url = j.stack.services["diagnosis"].url
    return [f"the diagnostician's page: {url}/ws  (sign in as {ECG_READER}, password "
            f"dev-{ECG_READER}: an ECG reader of {place(ECG_CENTRE)}; development users only)"
            + ("" if keep_running else " — up while the stack runs: make demo ARGS=--keep-running")]


def try_lines(j: Journey) -> list[str]:
    """A bearer token per service for the township's doctor, and curl lines."""
    keys = j.keys
    lines = ["the township doctor's tokens (an hour each) and what to try:"]
    for service in ("lab", "diagnosis", "referral"):
        token = issue_token(keys.auth_private_pem, user=TOWNSHIP_DOCTOR,
                            institution=keys.institution_id, roles=["clinician"],
                            audience=service)
        lines.append(f"  export {service.upper()}_TOKEN={token}")
    lab = j.stack.services["lab"].url
    dx = j.stack.services["diagnosis"].url
    ref = j.stack.services["referral"].url
    lines += [
        f"  curl -s -H \"Authorization: Bearer $LAB_TOKEN\" "
        f"{lab}/orders/{j.facts.get('lab_order')}/report",
        f"  curl -s -H \"Authorization: Bearer $LAB_TOKEN\" '{lab}/feed?limit=20'",
        f"  curl -s -H \"Authorization: Bearer $DIAGNOSIS_TOKEN\" '{dx}/feed?limit=20'",
        f"  curl -s -H \"Authorization: Bearer $REFERRAL_TOKEN\" "
        f"{ref}/referrals/{j.facts.get('referral_up')}",
        f"  curl -s -H \"Authorization: Bearer $REFERRAL_TOKEN\" "
        f"'{ref}/referrals?side=incoming'",
        "Ctrl-C stops the stack.",
    ]
    return lines

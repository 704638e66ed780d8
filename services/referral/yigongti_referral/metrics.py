"""Leakage and quality metrics (issue 12 item 7) through OpenTelemetry, by
institution: referrals lost (never received, received but never closed,
never used), follow-ups missed, acceptance time and finding → suggestion
time. The same figures are queried over HTTP from the tables (api.py
/metrics/referrals), so a restart loses nothing there."""

from __future__ import annotations

from datetime import datetime
from functools import cache

from opentelemetry import metrics

from . import events as ev


@cache
def _instruments():
    meter = metrics.get_meter("yigongti.referral")
    return {
        "lost": meter.create_counter(
            "referral.lost", description="Referrals lost, by reason (not_received: never "
            "received; not_closed: received, never closed; never_departed) and institution"),
        "missed": meter.create_counter(
            "referral.follow_up.missed", description="Follow-up rounds missed, by institution"),
        "closed": meter.create_counter(
            "referral.closed", description="Referrals closed, by direction and institution"),
        "acceptance": meter.create_histogram(
            "referral.acceptance_time", unit="min",
            description="Opened → accepted, by urgency and receiving institution"),
        "suggestion": meter.create_histogram(
            "referral.suggestion_latency", unit="ms",
            description="Critical finding raised → referral suggested, by institution"),
    }


def observe(events, now: datetime, opened_at: dict[str, datetime] | None = None) -> None:
    m = _instruments()
    for e in events:
        if isinstance(e, ev.ReferralLost):
            m["lost"].add(1, {"reason": e.reason.value, "from_institution": e.from_institution,
                              "to_institution": e.to_institution})
        elif isinstance(e, ev.FollowUpMissed):
            m["missed"].add(1, {"from_institution": e.from_institution,
                                "to_institution": e.to_institution})
        elif isinstance(e, ev.ReferralClosed):
            m["closed"].add(1, {"direction": e.direction.value,
                                "from_institution": e.from_institution})


def acceptance(urgency: str, to_institution: str, minutes: float) -> None:
    _instruments()["acceptance"].record(minutes, {"urgency": urgency,
                                                  "to_institution": to_institution})


def suggestion(from_institution: str, ms: float) -> None:
    _instruments()["suggestion"].record(ms, {"from_institution": from_institution})

"""The clinic's inbox: the services' feed items merged by time, in plain words,
and the critical items still waiting for acknowledgement with their time left."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from . import messages

# What each event means to the clinic; an unknown type shows as itself.
WORDS: dict[str, str] = {
    "yigongti.lab.order.placed.v1": "lab order",
    "yigongti.lab.specimen.collected.v1": "tube collected",
    "yigongti.lab.specimen.dispatched.v1": "tubes sent to the lab",
    "yigongti.lab.order.cancelled.v1": "tests cancelled",
    "yigongti.lab.critical_value.ack.v1": "critical value acknowledged",
    "yigongti.lab.order.accepted.v1": "order accepted by the lab",
    "yigongti.lab.test.duplicate_avoided.v1": "test not needed: a recognised result answers it",
    "yigongti.lab.specimen.collection_recorded.v1": "tube recorded",
    "yigongti.lab.specimen.in_transit.v1": "tube on its way",
    "yigongti.lab.specimen.in_transit_overdue.v1": "tube late on its way",
    "yigongti.lab.specimen.received.v1": "tube arrived at the lab",
    "yigongti.lab.specimen.rejected.v1": "tube rejected by the lab",
    "yigongti.lab.specimen.recollection_requested.v1": "collect a new tube",
    "yigongti.lab.specimen.in_testing.v1": "being tested",
    "yigongti.lab.results.reported.v1": "results",
    "yigongti.lab.results.confirmed.v1": "results confirmed at the lab",
    "yigongti.lab.recognised_result.amended.v1": "a recognised result was corrected",
    "yigongti.lab.critical_value.raised.v1": "CRITICAL VALUE",
    "yigongti.lab.critical_value.call_back_recorded.v1": "the lab phoned about a critical value",
    "yigongti.lab.critical_value.acknowledged.v1": "critical value acknowledged",
    "yigongti.lab.critical_value.escalated.v1": "critical value escalated (not acknowledged "
                                                "in time)",
    "yigongti.lab.report.verified.v1": "lab report ready",
    "yigongti.lab.report.amended.v1": "lab report corrected",
    "yigongti.lab.tests.cancelled.v1": "tests cancelled",
    "yigongti.lab.charges.posted.v1": "charges",
    "yigongti.lab.charges.reversed.v1": "charges reversed",
    "yigongti.diagnosis.requested.v1": "reading requested",
    "yigongti.diagnosis.queued.v1": "waiting to be read",
    "yigongti.diagnosis.claimed.v1": "being read",
    "yigongti.diagnosis.reported.v1": "report ready",
    "yigongti.diagnosis.report.amended.v1": "report corrected",
    "yigongti.diagnosis.overdue.v1": "reading late",
    "yigongti.diagnosis.critical_finding.raised.v1": "CRITICAL FINDING",
    "yigongti.diagnosis.critical_finding.acknowledged.v1": "critical finding acknowledged",
    "yigongti.diagnosis.critical_finding.escalated.v1": "critical finding escalated",
    "yigongti.diagnosis.cancelled.v1": "reading request cancelled",
    "yigongti.diagnosis.released.v1": "back in the reading queue",
    "yigongti.diagnosis.withdrawn.v1": "reading request withdrawn",
    "yigongti.diagnosis.study.recognised.v1": "an earlier study is recognised (互认)",
    "yigongti.diagnosis.charges.posted.v1": "charges",
    "yigongti.diagnosis.charges.reversed.v1": "charges reversed",
    "yigongti.settlement.identity.verified.v1": "patient identified for payment",
    "yigongti.settlement.identity.rejected.v1": "patient NOT identified for payment",
    "yigongti.settlement.settlement.completed.v1": "settled",
    "yigongti.settlement.settlement.rejected.v1": "NOT settled",
    "yigongti.settlement.settlement.reversed.v1": "payment reversed",
    "yigongti.settlement.safety_net.granted.v1": "safety-net assistance granted",
    "yigongti.settlement.audit_flag.raised.v1": "payment flagged for audit",
    "yigongti.settlement.audit_decision.recorded.v1": "audit decision",
    "yigongti.settlement.high_out_of_pocket.alert.v1": "high out-of-pocket cost alert",
    "yigongti.referral.suggested.v1": "referral suggested",
    "yigongti.referral.opened.v1": "referral opened",
    "yigongti.referral.accepted.v1": "referral accepted",
    "yigongti.referral.declined.v1": "referral declined",
    "yigongti.referral.expired.v1": "referral expired (no answer in time)",
    "yigongti.referral.reroute.proposed.v1": "another hospital proposed",
    "yigongti.referral.rerouted.v1": "referral sent to another hospital",
    "yigongti.referral.withdrawn.v1": "referral withdrawn",
    "yigongti.referral.patient.in_transit.v1": "patient on the way",
    "yigongti.referral.patient.in_transit_overdue.v1": "patient late on the way",
    "yigongti.referral.patient.received.v1": "patient arrived",
    "yigongti.referral.closed.v1": "referral closed",
    "yigongti.referral.follow_up.scheduled.v1": "follow-up visit due",
    "yigongti.referral.follow_up.done.v1": "follow-up visit done",
    "yigongti.referral.follow_up.missed.v1": "follow-up visit MISSED",
    "yigongti.referral.paperwork.overdue.v1": "referral paperwork still to record",
    "yigongti.referral.lost.v1": "referral LOST (patient not received or never closed)",
    "yigongti.referral.critical_value.forwarded.v1": "critical lab value of an arriving patient",
    "yigongti.intake.rejected.v1": "REFUSED",
}

# Raised type -> (acknowledged type, id field, deadline field).
CRITICAL = {
    "yigongti.lab.critical_value.raised.v1":
        ("yigongti.lab.critical_value.acknowledged.v1", "critical_id", "escalate_at"),
    "yigongti.diagnosis.critical_finding.raised.v1":
        ("yigongti.diagnosis.critical_finding.acknowledged.v1", "finding_id", "acknowledge_by"),
}


def describe(ce_type: str) -> str:
    return WORDS.get(ce_type, ce_type)


def merged(items: list[dict]) -> list[dict]:
    """Every service's items, oldest first, each with `what` in plain words."""
    out = []
    for item in sorted(items, key=lambda i: (i["time"], i["service"], i["seq"])):
        what = describe(item["type"])
        data = item["data"]
        if item["type"] == "yigongti.intake.rejected.v1":
            what = "REFUSED: " + messages.intake_reason(data.get("reason", ""), item["service"])
        elif item["type"].endswith("critical_value.raised.v1"):
            shown = (data.get("comparator") or "") + str(data.get("value") or
                                                          data.get("coded_value") or "")
            what += f" {data.get('critical_id')}: {data.get('test_code')} {shown} " \
                    f"{data.get('unit') or ''}".rstrip()
        elif item["type"].endswith("critical_finding.raised.v1"):
            what += f" {data.get('finding_id')}: {data.get('conclusion')}"
        elif item["type"].endswith("settlement.completed.v1"):
            what += f": total {data.get('total')}, the patient paid {data.get('out_of_pocket')}"
        elif item["type"].endswith("referral.declined.v1") and data.get("reason"):
            what += f" ({data.get('reason')})"
        out.append({**item, "what": what})
    return out


@dataclass(frozen=True)
class OpenCritical:
    service: str
    number: str
    aggregate: str
    what: str
    time_left: str


def _left(deadline: str | None, now: datetime) -> str:
    if not deadline:
        return "?"
    seconds = int((datetime.fromisoformat(deadline) - now).total_seconds())
    if seconds < 0:
        return f"OVERDUE by {-seconds // 60} min"
    return f"{seconds // 60} min {seconds % 60:02d} s"


def open_criticals(items: list[dict], now: datetime) -> list[OpenCritical]:
    acknowledged = {(i["type"], i["data"].get(CRITICAL[r][1]))
                    for i in items for r in CRITICAL if i["type"] == CRITICAL[r][0]}
    out = []
    for item in items:
        spec = CRITICAL.get(item["type"])
        if spec is None:
            continue
        ack_type, id_field, deadline_field = spec
        number = item["data"].get(id_field)
        if (ack_type, number) in acknowledged:
            continue
        out.append(OpenCritical(item["service"], number, item["aggregate"] or "", item["what"],
                                _left(item["data"].get(deadline_field), now)))
    return out

"""The terminal's client library: what the `yigongti` command is built on, and
what other terminal software can use.

    client = TerminalClient(config.load())
    result = await client.submit("lab", LabOrderPlaced(...))   # captured, then sent
    await client.flush()                                       # what waits, in order
    items = await client.read_feed("lab")                      # new feed items
    answer = await client.answer("lab", result)                # accepted or refused

Every event goes through the queue (queue.py): captured unsigned with its
ce_id, then sent oldest first, each signed as it is sent (sender.py). When
the link is down the event waits; the next `submit` or `flush` sends it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from yigongti_contracts.base import StrictModel
from yigongti_kit.intake_auth import TerminalSigner
from yigongti_kit.telemetry import current_trace_headers

from . import services
from .config import TerminalConfig
from .http import ServiceHttp
from .queue import Queue, Queued
from .sender import IntakeSender, LinkDown

tracer = trace.get_tracer("yigongti.terminal")

# The event that answers an intake record when it is applied, and the field
# both carry with the same value (so an earlier answer about the same order
# is not taken for this one).
ACCEPTED_BY: dict[str, tuple[tuple[str, ...], str]] = {
    "yigongti.lab.order.placed.v1": (("yigongti.lab.order.accepted.v1",), "order_id"),
    "yigongti.lab.specimen.collected.v1":
        (("yigongti.lab.specimen.collection_recorded.v1",), "barcode"),
    "yigongti.lab.specimen.dispatched.v1": (("yigongti.lab.specimen.in_transit.v1",),
                                            "shipment_id"),
    "yigongti.lab.order.cancelled.v1": (("yigongti.lab.tests.cancelled.v1",), "order_id"),
    "yigongti.lab.critical_value.ack.v1": (("yigongti.lab.critical_value.acknowledged.v1",),
                                           "critical_id"),
    "yigongti.diagnosis.requested.v1": (("yigongti.diagnosis.queued.v1",), "request_id"),
    "yigongti.diagnosis.critical_finding.ack.v1":
        (("yigongti.diagnosis.critical_finding.acknowledged.v1",), "finding_id"),
    "yigongti.referral.requested.v1": (("yigongti.referral.opened.v1",), "referral_id"),
    "yigongti.referral.decision.v1": (("yigongti.referral.accepted.v1",
                                       "yigongti.referral.declined.v1"), "referral_id"),
    "yigongti.referral.patient.departed.v1": (("yigongti.referral.patient.in_transit.v1",),
                                              "referral_id"),
    "yigongti.referral.patient.arrived.v1": (("yigongti.referral.patient.received.v1",),
                                             "referral_id"),
}
REJECTED = "yigongti.intake.rejected.v1"


def record_value(event: StrictModel) -> bytes:
    """The bytes a record carries: compact JSON of the contract model (fixed at
    capture, so a resend carries the same value)."""
    return json.dumps(event.model_dump(mode="json"), separators=(",", ":")).encode()


class UnknownPatientOffline(Exception):
    """Offline, only a patient whose ref this terminal knows can be queued."""


@dataclass
class FlushReport:
    sent: list[Queued] = field(default_factory=list)
    waiting: int = 0
    link_error: str | None = None


@dataclass
class SubmitResult:
    item: Queued
    sent: bool
    waiting: int

    @property
    def ce_id(self) -> str:
        return self.item.ce_id


@dataclass
class Answer:
    accepted: bool
    type: str
    reason: str | None = None
    fields: list[dict] = field(default_factory=list)
    data: dict = field(default_factory=dict)


class TerminalClient:
    def __init__(self, config: TerminalConfig, *, http_transport=None) -> None:
        self.config = config
        self.queue = Queue(config.queue_path)
        self.signer = TerminalSigner(config.terminal_id, config.private_key_pem())
        self._http_transport = http_transport  # tests: an in-process ASGI app

    def close(self) -> None:
        self.queue.close()

    # --- intake ------------------------------------------------------------------

    def _sender(self) -> IntakeSender:
        c = self.config
        return IntakeSender(self.signer, c.kafka_bootstrap, broker_kind=c.kafka_broker_kind,
                            topic_prefix=c.topic_prefix, route=c.broker_route,
                            timeout_s=c.send_timeout_s)

    async def submit(self, service: str, event: StrictModel) -> SubmitResult:
        """Capture `event` for `service` and send what waits; refuses (raises
        UnknownPatientOffline) an unknown patient while the link is down."""
        with tracer.start_as_current_span(
                f"terminal capture {type(event).__name__}",
                attributes={"cloudevents.event_type": event.CE_TYPE, "yigongti.service": service}):
            return await self._submit(service, event)

    async def _submit(self, service: str, event: StrictModel) -> SubmitResult:
        module = services.contract(service)
        if type(event) not in module.INTAKE:
            raise ValueError(f"{type(event).__name__} is not an intake message of {service}")
        value = record_value(event)
        key = event.kafka_key()
        ref = getattr(event, "patient_ref", None)
        sender = self._sender()
        try:
            await sender.__aenter__()
            online = True
        except LinkDown:
            online = False
        try:
            if ref and not self.queue.knows(ref) and not online:
                raise UnknownPatientOffline(ref)
            item = self.queue.capture(service=service, ce_type=event.CE_TYPE, key=key,
                                      value=value, aggregate=key,
                                      traceparent=current_trace_headers()[0])
            if ref:  # known now: the ref came from a lookup or the clinic's own records
                self.queue.remember(ref)
            report = await self._flush(sender) if online else FlushReport(
                waiting=len(self.queue.waiting()), link_error="unreachable")
        finally:
            await sender.__aexit__(None, None, None)
        return SubmitResult(item, self.queue.sent(item.ce_id), report.waiting)

    async def flush(self) -> FlushReport:
        """Send what waits, oldest first; stops at the first failure (order kept)."""
        if not self.queue.waiting():
            return FlushReport()
        try:
            async with self._sender() as sender:
                return await self._flush(sender)
        except LinkDown as exc:
            return FlushReport(waiting=len(self.queue.waiting()), link_error=str(exc))

    async def _flush(self, sender: IntakeSender) -> FlushReport:
        report = FlushReport()
        async with self.queue.flush_lock():
            for item in self.queue.waiting():  # read under the lock: nobody else sends
                try:
                    await sender.send(item)
                except LinkDown as exc:
                    self.queue.mark_failed(item.seq, str(exc))
                    report.link_error = str(exc)
                    break
                self.queue.mark_sent(item.seq)
                report.sent.append(item)
            report.waiting = len(self.queue.waiting())
        return report

    # --- HTTP and feeds --------------------------------------------------------------

    def http(self, service: str, *, require_contract: bool = True) -> ServiceHttp:
        if require_contract:
            services.contract(service)
        return ServiceHttp(self.config.url(service), self.config.token(service),
                           transport=self._http_transport.get(service)
                           if isinstance(self._http_transport, dict) else None)

    async def read_feed(self, service: str, *, wait: float = 0) -> list[dict]:
        """New items of the service's feed (kept on the terminal, cursor advanced)."""
        field_name = services.AGGREGATE_FIELD[service]
        new: list[dict] = []
        async with self.http(service) as http:
            after = self.queue.cursor(service)
            while True:
                page = await http.feed(after, wait=wait if not new else 0)
                items = page["items"]
                if not items:
                    break
                self.queue.store_feed(service, items, field_name, page["next"])
                new.extend(items)
                after = page["next"]
                wait = 0
        return new

    async def answer(self, service: str, result: SubmitResult, *,
                     timeout: float = 15.0) -> Answer | None:  # noqa: ASYNC109
        """The service's answer to a sent record, read from the feed: accepted
        (its event for the aggregate) or refused (IntakeRejected naming the
        ce_id); None when none came within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = _match(result.item, self.queue.feed_items(service))
            if found is not None:
                self.queue.mark_answered(result.ce_id, "accepted" if found.accepted
                                         else found.reason or "refused")
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await self.read_feed(service, wait=min(left, 5))

    def reconcile(self) -> list[tuple[Queued, str]]:
        """Mark the sent records whose answer the terminal has read; returns those
        still unanswered, with when they were sent."""
        waiting = []
        for item, sent_at in self.queue.unanswered():
            found = _match(item, self.queue.feed_items(item.service))
            if found is None:
                waiting.append((item, sent_at))
            else:
                self.queue.mark_answered(item.ce_id, "accepted" if found.accepted
                                         else found.reason or "refused")
        return waiting

    def known_items(self, service: str | None = None) -> list[dict]:
        return self.queue.feed_items(service)

    async def settle(self, *, credential_type: str, credential: dict, visit_id: str,
                     setting: str, lines: list[dict] | None = None,
                     posted_charges: bool = True, out_biz_no: str | None = None) -> Settled:
        """Identify the patient (face result, QR voucher, card) and settle the visit
        with the settlement service (HTTP, as at a counter: it needs the link). An
        unclear answer is asked again by the counter's number (outBizNo), never paid
        twice: the service keeps one answer per outBizNo."""
        services.contract("settlement")
        out_biz_no = out_biz_no or f"OB{uuid.uuid4().hex[:20]}"
        async with self.http("settlement") as http:
            verified = await http.post("/identity/verify", json={
                "out_biz_no": out_biz_no, "visit_id": visit_id,
                "credential_type": credential_type, "credential": credential})
            if verified.get("patient_ref"):
                self.queue.remember(verified["patient_ref"])
            body = {"out_biz_no": out_biz_no, "visit_id": visit_id,
                    "settlement_token": verified["settlement_token"], "setting": setting,
                    "posted_charges": posted_charges, "lines": lines or []}
            try:
                answer = await http.post("/settlements", json=body)
            except LinkDown:
                answer = await http.get(f"/settlements/{out_biz_no}")  # was it done?
        return Settled(out_biz_no, answer)

    async def settlement(self, out_biz_no: str) -> dict:
        services.contract("settlement")
        async with self.http("settlement") as http:
            return await http.get(f"/settlements/{out_biz_no}")

    async def lookup_patient(self, national_id: str, visit_id: str) -> str:
        """The patient_ref of an ID number, from the settlement service (never kept).

        The body is the settlement service's (POST /patients/lookup: `id_number` and
        the visit it is for; the terminal contract's planned draft named the number
        `national_id`)."""
        # Before the settlement service's contract is in the registry, the lookup
        # is reachable on its address alone (it is in the published terminal contract).
        async with self.http("settlement", require_contract=False) as http:
            answer: Any = await http.post("/patients/lookup",
                                          json={"id_number": national_id,
                                                "visit_id": visit_id})
        ref = answer["patient_ref"]
        self.queue.remember(ref)
        return ref


@dataclass
class Settled:
    out_biz_no: str
    answer: dict


def _match(item: Queued, feed_items: list[dict]) -> Answer | None:
    """The answer to `item` among feed items: IntakeRejected naming its ce_id, or the
    event that applies it (matched on the field both carry)."""
    for entry in feed_items:
        data = entry["data"]
        if entry["type"] == REJECTED and data.get("rejected_id") == item.ce_id:
            return Answer(False, entry["type"], data.get("reason"),
                          list(data.get("fields") or []), data)
    accepted, field_name = ACCEPTED_BY.get(item.ce_type, ((), ""))
    sent = json.loads(item.value)
    for entry in feed_items:
        data = entry["data"]
        if entry["type"] in accepted and data.get(field_name) == sent.get(field_name):
            return Answer(True, entry["type"], data=data)
    return None


def run(coro):
    """Run a coroutine from synchronous code (the CLI)."""
    return asyncio.run(coro)

"""The state machine's events as the contracts' models, into the outbox of
`referral.events.v1` in the caller's transaction; and the IntakeRejected
answers to records refused after they were parked."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime

import asyncpg
from yigongti_contracts.base import StrictModel
from yigongti_contracts.common import FieldError, IntakeRejected
from yigongti_contracts.referral import v1
from yigongti_kit import inbox
from yigongti_kit.outbox import add_events

from . import events as domain_events
from . import store

SERVICE = "referral"
SOURCE = "/yigongti/referral"
EVENTS_TOPIC = "referral.events.v1"
AGGREGATE = "referral_case"

_CONTRACT: dict[type, type[StrictModel]] = {
    t: getattr(v1, t.__name__) for t in domain_events.Event.__args__}


def contract_event(event: domain_events.Event) -> StrictModel:
    model = _CONTRACT[type(event)]
    return model(**{f.name: getattr(event, f.name) for f in fields(event)})


async def emit(conn: asyncpg.Connection, events: list[StrictModel]) -> list[str]:
    """Store the events, in order, under their own keys; their ce_ids."""
    if not events:
        return []
    return await add_events(conn, [(e, e.kafka_key()) for e in events], topic=EVENTS_TOPIC,
                            source=SOURCE, aggregatetype=AGGREGATE)


async def answer_refused(conn: asyncpg.Connection, fact_id: str, reason: str,
                         problems: list[tuple[str, str]]) -> None:
    """IntakeRejected for a record refused after it was parked (its origin was
    kept when it arrived); its inbox row is forgotten: it had no effect, so a
    resend with its ce_id is taken as new. An HTTP action has no origin row
    (its caller got the answer)."""
    origin = await store.origin(conn, fact_id)
    if origin is None:
        return
    await emit(conn, [IntakeRejected(
        key=origin["referral_id"], service=SERVICE, rejected_id=origin["ce_id"],
        rejected_type=origin["ce_type"], sender=origin["ce_source"], reason=reason,
        fields=tuple(FieldError(field=f, code=c) for f, c in problems[:50]),
        rejected_at=datetime.now(UTC))])
    await inbox.forget(conn, origin["ce_source"], origin["ce_id"])

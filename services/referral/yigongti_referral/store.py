"""A case as one row (cases.data holds the state machine's Case as JSON; the
columns are what queries select on), and the tables beside it. Plain SQL in
the caller's transaction; the caller holds the case lock (locking.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import TypeAdapter

from . import facts
from .case import Case, Parked

_CASE = TypeAdapter(Case)
_FACTS: dict[str, type] = {t.__name__: t for t in facts.IntakeFact.__args__}


def dump_case(case: Case) -> dict[str, Any]:
    """JSON of a case; parked records are tagged with their type (their fields
    alone do not tell a departure from an arrival)."""
    data = _CASE.dump_python(replace(case, parked=()), mode="json")
    data["parked"] = [{"type": type(p.fact).__name__, "fact_id": p.fact_id, "sender": p.sender,
                       "fact": TypeAdapter(type(p.fact)).dump_python(p.fact, mode="json")}
                      for p in case.parked]
    return data


def load_case(data: dict[str, Any]) -> Case:
    parked = tuple(Parked(TypeAdapter(_FACTS[p["type"]]).validate_python(p["fact"]),
                          p["fact_id"], p["sender"]) for p in data.get("parked", ()))
    case = _CASE.validate_python({**data, "parked": ()})
    return replace(case, parked=parked)


async def case(conn: asyncpg.Connection, referral_id: str) -> Case | None:
    raw = await conn.fetchval("SELECT data FROM cases WHERE referral_id = $1", referral_id)
    return None if raw is None else load_case(_json(raw))


def _json(raw: Any) -> Any:
    return json.loads(raw) if isinstance(raw, str) else raw


async def save(conn: asyncpg.Connection, c: Case) -> None:
    r = c.request
    await conn.execute(
        """INSERT INTO cases (referral_id, state, direction, urgency, from_institution,
                              to_institution, patient_ref, root_referral_id, parent_referral_id,
                              accept_by, opened_at, accepted_at, departed_at, arrived_at,
                              closed_at, data)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
           ON CONFLICT (referral_id) DO UPDATE SET
             state = excluded.state, direction = excluded.direction,
             urgency = excluded.urgency, from_institution = excluded.from_institution,
             to_institution = excluded.to_institution, patient_ref = excluded.patient_ref,
             root_referral_id = excluded.root_referral_id,
             parent_referral_id = excluded.parent_referral_id, accept_by = excluded.accept_by,
             opened_at = excluded.opened_at, accepted_at = excluded.accepted_at,
             departed_at = excluded.departed_at, arrived_at = excluded.arrived_at,
             closed_at = excluded.closed_at, data = excluded.data, updated_at = db_now()""",
        c.referral_id, c.state and c.state.value, r and r.direction.value,
        r and r.urgency.value, r and r.from_institution, r and r.to_institution,
        r and r.patient_ref, c.root_referral_id, r and r.parent_referral_id, c.accept_by,
        c.opened_at, c.accepted_at, c.departed_at, c.arrived_at, c.closed_at,
        dump_case(c))


async def delete(conn: asyncpg.Connection, referral_id: str) -> None:
    await conn.execute("DELETE FROM cases WHERE referral_id = $1", referral_id)


async def remember_origin(conn: asyncpg.Connection, *, ce_id: str, ce_type: str, ce_source: str,
                          referral_id: str, sender_institution: str | None) -> None:
    await conn.execute(
        """INSERT INTO intake_origins (ce_id, ce_type, ce_source, referral_id, sender_institution)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (ce_id) DO NOTHING""",
        ce_id, ce_type, ce_source, referral_id, sender_institution)


async def origin(conn: asyncpg.Connection, ce_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM intake_origins WHERE ce_id = $1", ce_id)


# --- views -------------------------------------------------------------------------

_VIEW_COLUMNS = """referral_id, state, direction, urgency, from_institution, to_institution,
    patient_ref, root_referral_id, parent_referral_id, accept_by, opened_at, accepted_at,
    departed_at, arrived_at, closed_at, data"""


def view(row: asyncpg.Record) -> dict[str, Any]:
    """What a coordinator sees of a case: state, deadline, ends, the chain's ids,
    the outcome and the follow-up rounds."""
    data = _json(row["data"])
    out = {k: (v.isoformat() if isinstance(v, datetime) else v)
           for k, v in row.items() if k != "data"}
    out.update(
        paperwork_pending=data.get("paperwork_pending", False),
        outcome=data.get("outcome"), lost_reason=data.get("lost_reason"),
        discharge_summary_id=data.get("discharge_summary_id"),
        proposed_institution=data.get("proposed_institution"),
        rerouted_to=data.get("rerouted_to"), valid_until=data.get("valid_until"),
        reason=(data.get("request") or {}).get("reason"),
        required_capability=(data.get("request") or {}).get("required_capability"),
        attached_results=(data.get("request") or {}).get("attached_results", []),
        rounds=data.get("rounds", []))
    return out


async def visible(conn: asyncpg.Connection, referral_id: str,
                  institution: str) -> asyncpg.Record | None:
    """The case if `institution` is one of its ends (one statement: an absent
    case and another's case get the same answer)."""
    return await conn.fetchrow(
        f"""SELECT {_VIEW_COLUMNS} FROM cases WHERE referral_id = $1 AND state IS NOT NULL
              AND $2 IN (from_institution, to_institution)""", referral_id, institution)


async def listing(conn: asyncpg.Connection, institution: str, *, side: str,
                  state: str | None, limit: int) -> list[dict[str, Any]]:
    column = "to_institution" if side == "incoming" else "from_institution"
    rows = await conn.fetch(
        f"""SELECT {_VIEW_COLUMNS} FROM cases WHERE {column} = $1 AND state IS NOT NULL
              AND ($2::text IS NULL OR state = $2) ORDER BY opened_at DESC LIMIT $3""",
        institution, state, limit)
    return [view(r) for r in rows]


async def chain(conn: asyncpg.Connection, root_referral_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"""SELECT {_VIEW_COLUMNS} FROM cases WHERE root_referral_id = $1
            ORDER BY opened_at, referral_id""", root_referral_id)
    return [{"referral_id": r["referral_id"], "parent_referral_id": r["parent_referral_id"],
             "to_institution": r["to_institution"], "state": r["state"]} for r in rows]




async def metrics(conn: asyncpg.Connection, institution: str) -> dict[str, Any]:
    """Leakage and quality of the institution's referrals, as sender and as
    receiver (issue 12 item 7)."""
    out: dict[str, Any] = {"institution": institution}
    for side, column in (("as_sender", "from_institution"), ("as_receiver", "to_institution")):
        row = await conn.fetchrow(
            f"""SELECT count(*) FILTER (WHERE state IS NOT NULL) AS referrals,
                       count(*) FILTER (WHERE state = 'lost'
                                          AND data->>'lost_reason' = 'not_received')
                         AS never_received,
                       count(*) FILTER (WHERE state = 'lost'
                                          AND data->>'lost_reason' = 'not_closed')
                         AS received_never_closed,
                       count(*) FILTER (WHERE state = 'closed') AS closed,
                       coalesce(sum((SELECT count(*) FROM jsonb_array_elements(data->'rounds') r
                                      WHERE r->>'state' = 'missed')), 0)::bigint
                         AS follow_ups_missed,
                       percentile_cont(0.5) WITHIN GROUP (ORDER BY greatest(0, extract(
                           epoch FROM accepted_at - opened_at) / 60))
                         AS median_acceptance_minutes
                  FROM cases WHERE {column} = $1""", institution)
        out[side] = {k: (float(v) if v is not None and k.startswith("median") else v)
                     for k, v in row.items()}
    out["median_finding_to_suggestion_ms"] = await conn.fetchval(
        """SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM
                  suggested_at - finding_raised_at) * 1000)
             FROM suggestions WHERE from_institution = $1""", institution)
    return out

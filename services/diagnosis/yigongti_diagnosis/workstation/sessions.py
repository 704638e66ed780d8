"""Workstation sessions, kept in PostgreSQL (any replica serves any request).

The cookie holds a random token; the table holds its SHA-256, the user, the
institution and roles as the bearer tokens carry them, and the session's CSRF
token. A session ends on sign-out, after `idle_minutes` without a request, or
`absolute_hours` after sign-in (policy.yaml); an ended session's cookie is
refused. Time is the database's (db_now), as for every clock of the service.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from importlib.resources import files

import asyncpg
import yaml
from yigongti_kit.auth import Principal

COOKIE = "ygt_ws"


@cache
def policy() -> dict:
    return yaml.safe_load((files("yigongti_diagnosis.workstation") / "policy.yaml")
                          .read_text("utf-8"))


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str


async def start(conn: asyncpg.Connection, principal: Principal) -> tuple[str, Session]:
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    await conn.execute(
        """INSERT INTO ws_sessions (token_hash, user_id, institution, roles, csrf)
           VALUES ($1, $2, $3, $4, $5)""",
        _hash(token), principal.user, principal.institution, list(principal.roles), csrf)
    return token, Session(principal, csrf)


async def resume(conn: asyncpg.Connection, token: str | None, *,
                 touch: bool = True) -> Session | None:
    """The live session of a cookie, its idle clock restarted; None when the
    cookie is unknown, ended or timed out (a timed-out one is ended now).
    `touch=False` for what the page does by itself (the event stream, the
    worklist's refresh): that is not the reader's activity and must not keep
    an unattended screen signed in."""
    if not token or len(token) > 100:
        return None
    p = policy()
    if not touch:
        row = await conn.fetchrow(
            """SELECT user_id, institution, roles, csrf FROM ws_sessions
                WHERE token_hash = $1 AND ended_at IS NULL AND last_seen_at + $2 > db_now()
                  AND created_at + $3 > db_now()""",
            _hash(token), timedelta(minutes=p["idle_minutes"]),
            timedelta(hours=p["absolute_hours"]))
        return None if row is None else Session(
            Principal(row["user_id"], row["institution"], tuple(row["roles"])), row["csrf"])
    row = await conn.fetchrow(
        """UPDATE ws_sessions
              SET last_seen_at = db_now(),
                  ended_at = CASE WHEN last_seen_at + $2 <= db_now()
                                    OR created_at + $3 <= db_now() THEN db_now() END,
                  end_reason = CASE WHEN last_seen_at + $2 <= db_now()
                                      OR created_at + $3 <= db_now() THEN 'timeout' END
            WHERE token_hash = $1 AND ended_at IS NULL
        RETURNING user_id, institution, roles, csrf, ended_at""",
        _hash(token), timedelta(minutes=p["idle_minutes"]),
        timedelta(hours=p["absolute_hours"]))
    if row is None or row["ended_at"] is not None:
        return None
    return Session(Principal(row["user_id"], row["institution"], tuple(row["roles"])),
                   row["csrf"])


async def end(conn: asyncpg.Connection, token: str | None) -> None:
    if token:
        await conn.execute(
            """UPDATE ws_sessions SET ended_at = db_now(), end_reason = 'signed_out'
                WHERE token_hash = $1 AND ended_at IS NULL""", _hash(token))


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and secrets.compare_digest(session.csrf, sent)

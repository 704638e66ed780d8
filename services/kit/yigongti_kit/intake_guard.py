"""The consumer's guard for signed intake: who sent it (signature, registered
terminal, fresh time) on the raw headers and bytes, before anything is
decoded; the nonce after the inbox, so a redelivery of a record already
handled is a duplicate, not a replay."""

from __future__ import annotations

import time
from datetime import datetime

import asyncpg
from aiokafka import ConsumerRecord
from yigongti_contracts.envelope import Envelope

from .consumer import Rejection, Sender, Verdict
from .intake_auth import (
    NONCE,
    REPLAYED_NONCE,
    Terminal,
    check_and_store_nonce,
    get_terminal,
    load_public_key,
    terminal_id_of,
    valid_terminal_id,
    verify_record,
)


class TerminalGuard:
    """`cache_s`: how long a terminal's registry entry is reused before it is
    read again. Terminals are registered at start (TERMINALS_FILE), so this
    only bounds how long a change made behind the service's back (SQL) takes."""

    def __init__(self, *, max_skew_s: float, cache_s: float = 10.0) -> None:
        self.max_skew_s = max_skew_s
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, Terminal | None]] = {}

    async def _terminal(self, conn: asyncpg.Connection, terminal_id: str) -> Terminal | None:
        now = time.monotonic()
        hit = self._cache.get(terminal_id)
        if hit is not None and now - hit[0] < self.cache_s:
            return hit[1]
        terminal = await get_terminal(conn, terminal_id)
        if len(self._cache) > 10_000:  # unknown ids by the thousand: start again
            self._cache.clear()
        self._cache[terminal_id] = (now, terminal)
        return terminal

    async def verify(self, conn: asyncpg.Connection, record: ConsumerRecord,
                     received_at: datetime, allowance_s: float) -> Verdict:
        headers = record.headers or []
        terminal_id = terminal_id_of(headers)
        claimed = terminal_id if valid_terminal_id(terminal_id) else None
        # Looked up only when well-formed: a NUL or 10 kB id never reaches SQL.
        terminal = await self._terminal(conn, claimed) if claimed else None
        key = load_public_key(terminal.public_key) if terminal and terminal.active else None
        code = verify_record(headers, record.value or b"", key, received_at=received_at,
                             max_skew_s=self.max_skew_s, allowance_s=allowance_s)
        if code is not None:
            return Verdict(None, code, claimed)
        assert terminal is not None
        return Verdict(Sender(terminal_id=terminal.terminal_id,
                              institution_id=terminal.institution_id), None, claimed)

    async def remember(self, conn: asyncpg.Connection, envelope: Envelope,
                       record: ConsumerRecord) -> None:
        headers = record.headers or []
        nonce = next(v.decode() for k, v in headers if k == NONCE)  # verified before
        terminal_id = terminal_id_of(headers)
        if not await check_and_store_nonce(conn, terminal_id, nonce, envelope.time):
            raise Rejection(REPLAYED_NONCE, [(NONCE, "seen")])

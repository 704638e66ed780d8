"""The store-and-forward queue on disk (SQLite): township networks drop.

An event is captured here first, unsigned, with its ce_id fixed at capture
and its value bytes as they will be sent (a resend must carry the same ce_id
and the same value, so the service takes it once). The sender signs each one
when it sends it (sender.py), oldest first.

Lock rule (the only one): one flush at a time per terminal, held by an
exclusive lock on `<queue>.lock` for the whole flush; capturing never waits
for it (SQLite's own write lock keeps `seq` in capture order).

Known patients: refs this terminal has seen (a lookup, or an event sent
online). Offline, only those can be queued: a ref cannot be checked without
the county, and a mistyped one would travel for hours. Refs are pseudonyms;
no ID number is ever written here.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ce_id TEXT NOT NULL UNIQUE,
    service TEXT NOT NULL,
    ce_type TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    aggregate TEXT NOT NULL,
    captured_at TEXT NOT NULL,
    traceparent TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    sent_at TEXT,
    answered_at TEXT,
    answer TEXT
);
CREATE TABLE IF NOT EXISTS known_patients (
    patient_ref TEXT PRIMARY KEY,
    learned_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS feed_cursor (
    service TEXT PRIMARY KEY,
    after INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS feed_item (
    service TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    aggregate TEXT,
    time TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (service, seq)
);
"""


@dataclass(frozen=True)
class Queued:
    seq: int
    ce_id: str
    service: str
    ce_type: str
    key: str
    value: bytes
    aggregate: str
    captured_at: str
    attempts: int
    last_error: str | None
    traceparent: str | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Queue:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a captured event survives a power cut
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    # --- capture and send ------------------------------------------------------

    def capture(self, *, service: str, ce_type: str, key: str, value: bytes,
                aggregate: str, ce_id: str | None = None,
                traceparent: str | None = None) -> Queued:
        """Keep an event to send; `traceparent` is the trace it was captured in, so
        that its sending, however late, continues that trace."""
        ce_id = ce_id or str(uuid.uuid4())
        captured = _now()
        cur = self._db.execute(
            "INSERT INTO outbox (ce_id, service, ce_type, key, value, aggregate, captured_at,"
            " traceparent) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ce_id, service, ce_type, key, value, aggregate, captured, traceparent))
        return Queued(cur.lastrowid, ce_id, service, ce_type, key, value, aggregate,
                      captured, 0, None, traceparent)

    def waiting(self) -> list[Queued]:
        rows = self._db.execute(
            "SELECT seq, ce_id, service, ce_type, key, value, aggregate, captured_at, attempts,"
            " last_error, traceparent FROM outbox WHERE sent_at IS NULL ORDER BY seq").fetchall()
        return [Queued(*row) for row in rows]

    def mark_sent(self, seq: int) -> None:
        self._db.execute("UPDATE outbox SET sent_at = ?, attempts = attempts + 1,"
                         " last_error = NULL WHERE seq = ?", (_now(), seq))

    def mark_failed(self, seq: int, error: str) -> None:
        self._db.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?"
                         " WHERE seq = ?", (error[:200], seq))

    def unanswered(self) -> list[tuple[Queued, str]]:
        """Sent records the county has not answered yet (in the feed), with when sent."""
        rows = self._db.execute(
            "SELECT seq, ce_id, service, ce_type, key, value, aggregate, captured_at, attempts,"
            " last_error, traceparent, sent_at FROM outbox"
            " WHERE sent_at IS NOT NULL AND answered_at IS NULL ORDER BY seq").fetchall()
        return [(Queued(*row[:-1]), row[-1]) for row in rows]

    def mark_answered(self, ce_id: str, answer: str) -> None:
        """`answer`: "accepted" or the refusal's reason code."""
        self._db.execute("UPDATE outbox SET answered_at = ?, answer = ? WHERE ce_id = ?"
                         " AND answered_at IS NULL", (_now(), answer, ce_id))

    def sent(self, ce_id: str) -> bool:
        row = self._db.execute("SELECT sent_at FROM outbox WHERE ce_id = ?", (ce_id,)).fetchone()
        return bool(row and row[0])

    @contextlib.asynccontextmanager
    async def flush_lock(self) -> AsyncIterator[None]:
        """The lock rule above: one flush at a time (two flushers would each
        send the head; harmless for the service, but out of order for us).
        Waited for in a thread, so a flush waiting here blocks no event loop."""
        handle = await asyncio.to_thread(open, self.path.with_suffix(".lock"), "w")
        try:
            await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            handle.close()

    # --- known patients -------------------------------------------------------

    def knows(self, patient_ref: str) -> bool:
        return self._db.execute("SELECT 1 FROM known_patients WHERE patient_ref = ?",
                                (patient_ref,)).fetchone() is not None

    def remember(self, patient_ref: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO known_patients VALUES (?, ?)",
                         (patient_ref, _now()))

    # --- feeds ---------------------------------------------------------------------

    def cursor(self, service: str) -> int:
        row = self._db.execute("SELECT after FROM feed_cursor WHERE service = ?",
                               (service,)).fetchone()
        return row[0] if row else 0

    def store_feed(self, service: str, items: list[dict], aggregate_field: str,
                   after: int) -> None:
        with self._tx():
            self._db.executemany(
                "INSERT OR IGNORE INTO feed_item VALUES (?, ?, ?, ?, ?, ?)",
                [(service, i["seq"], i["type"], i.get(aggregate_field), i["time"],
                  _json(i["data"])) for i in items])
            self._db.execute("INSERT INTO feed_cursor VALUES (?, ?) ON CONFLICT (service)"
                             " DO UPDATE SET after = excluded.after", (service, after))

    def feed_items(self, service: str | None = None) -> list[dict]:
        import json

        sql = "SELECT service, seq, type, aggregate, time, data FROM feed_item"
        args: tuple = ()
        if service:
            sql += " WHERE service = ?"
            args = (service,)
        rows = self._db.execute(sql + " ORDER BY time, service, seq", args).fetchall()
        return [{"service": s, "seq": q, "type": t, "aggregate": a, "time": tm,
                 "data": json.loads(d)} for s, q, t, a, tm, d in rows]

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def _json(data) -> str:
    import json

    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

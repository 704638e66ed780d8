"""Signed intake: every record a clinic terminal publishes carries its signature.

Each terminal has an Ed25519 key pair; its public key is registered in the
`terminals` table (loaded from TERMINALS_FILE). A record carries three headers
besides the CloudEvents ones:

    x-terminal-id   the terminal's id
    x-nonce         16+ random bytes, hex
    x-signature     base64 of the Ed25519 signature

over the UTF-8 string, joined by "\\n", of: ce_type, ce_id, ce_source, ce_time
(exactly as in its header), nonce, terminal_id, and the hex SHA-256 of the
record value. A terminal's ce_source is "/terminals/<terminal_id>".

Checks and their reject codes (IntakeRejected.reason):

    missing_signature   an x-* header absent
    source_mismatch     ce_source is not /terminals/<x-terminal-id>
    unknown_terminal    no active registered key for the terminal
    bad_signature       signature (or nonce) malformed, or not valid for this key
                        and these bytes; also a repeated signed header
    stale_timestamp     ce_time more than INTAKE_MAX_SKEW_S from the Kafka
                        record's timestamp (broker time), or unreadable
    replayed_nonce      the (terminal, nonce) pair was seen before

Nonces and the inbox. A record Kafka delivers twice carries the same nonce, so
the nonce check belongs *after* the inbox claim (a duplicate ce_id is a
duplicate, not a replay) and *in the same transaction* (a rolled-back attempt
must not burn its nonce). A re-published copy gets a new broker timestamp and
fails the time check, so nonces need keeping only a little longer than the
allowed skew: prune with `prune_nonces(conn, now - 2 * skew)`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import asyncpg
import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from yigongti_contracts.envelope import parse_time

TERMINAL_ID = "x-terminal-id"
NONCE = "x-nonce"
SIGNATURE = "x-signature"
SIGNATURE_HEADERS = (TERMINAL_ID, NONCE, SIGNATURE)
_SIGNED_CE_HEADERS = ("ce_type", "ce_id", "ce_source", "ce_time")

NONCE_BYTES = 16
_MAX_TERMINAL_ID = 128

MISSING_SIGNATURE = "missing_signature"
SOURCE_MISMATCH = "source_mismatch"
UNKNOWN_TERMINAL = "unknown_terminal"
BAD_SIGNATURE = "bad_signature"
STALE_TIMESTAMP = "stale_timestamp"
REPLAYED_NONCE = "replayed_nonce"


def terminal_source(terminal_id: str) -> str:
    """The ce_source of a terminal's records."""
    return f"/terminals/{terminal_id}"


# --- keys ----------------------------------------------------------------------


@lru_cache(maxsize=4096)
def load_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from base64 of its raw 32 bytes, or from PEM."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError("public key is neither PEM nor base64") from exc
    if len(raw) != 32:
        raise ValueError("raw Ed25519 public key must be 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_b64(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """Base64 of the raw 32-byte public key (the registry's storage form)."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def _as_private_key(key: Ed25519PrivateKey | str | bytes) -> Ed25519PrivateKey:
    if isinstance(key, Ed25519PrivateKey):
        return key
    data = key.encode() if isinstance(key, str) else key
    if data.strip().startswith(b"-----BEGIN"):
        loaded = serialization.load_pem_private_key(data, password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 private key")
        return loaded
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(data, validate=True))


def _as_public_key(key: Ed25519PublicKey | str) -> Ed25519PublicKey:
    return key if isinstance(key, Ed25519PublicKey) else load_public_key(key)


# --- signing and verifying -------------------------------------------------------


def signing_input(
    *,
    ce_type: str,
    ce_id: str,
    ce_source: str,
    ce_time_header: str,
    nonce: str,
    terminal_id: str,
    value: bytes,
) -> bytes:
    """The exact bytes a terminal signs."""
    digest = hashlib.sha256(value).hexdigest()
    parts = (ce_type, ce_id, ce_source, ce_time_header, nonce, terminal_id, digest)
    return "\n".join(parts).encode()


def sign_intake(
    private_key: Ed25519PrivateKey | str | bytes,
    *,
    terminal_id: str,
    ce_type: str,
    ce_id: str,
    ce_source: str,
    ce_time_header: str,
    value: bytes,
    nonce: str | None = None,
) -> dict[str, str]:
    """The x-terminal-id, x-nonce and x-signature headers for one record."""
    nonce = nonce if nonce is not None else secrets.token_hex(NONCE_BYTES)
    message = signing_input(
        ce_type=ce_type,
        ce_id=ce_id,
        ce_source=ce_source,
        ce_time_header=ce_time_header,
        nonce=nonce,
        terminal_id=terminal_id,
        value=value,
    )
    signature = _as_private_key(private_key).sign(message)
    return {
        TERMINAL_ID: terminal_id,
        NONCE: nonce,
        SIGNATURE: base64.b64encode(signature).decode(),
    }


def parse_ce_time(text: str) -> datetime | None:
    """The aware UTC datetime of an RFC 3339 ce_time header, or None (the
    envelope's own rule: any case of T and Z, never raising)."""
    return parse_time(text)


def _as_datetime(received_at: datetime | int | float) -> datetime:
    if isinstance(received_at, datetime):
        return received_at
    return datetime.fromtimestamp(received_at / 1000, UTC)  # Kafka timestamps are ms


_NONCE = re.compile(r"^(?:[0-9a-fA-F]{2}){16,64}$")


def _valid_nonce(nonce: str) -> bool:
    """16 to 64 random bytes as hex digits, nothing else (bytes.fromhex alone
    would let spaces through)."""
    return bool(_NONCE.match(nonce))


def verify_intake(
    *,
    signature_headers: Mapping[str, str],
    ce_type: str,
    ce_id: str,
    ce_source: str,
    ce_time_header: str,
    value: bytes,
    public_key: Ed25519PublicKey | str | None,
    received_at: datetime | int | float,
    max_skew_s: float,
    allowance_s: float = 0.0,
) -> str | None:
    """None if the record is authentic and fresh, else the reject code.

    `signature_headers` holds x-terminal-id, x-nonce, x-signature (e.g.
    Envelope.extra); `public_key` is the terminal's registered key, None when
    it has none (look it up by x-terminal-id first); `received_at` is the
    Kafka record's timestamp (datetime, or epoch milliseconds); fresh means
    `received_at - max_skew_s - allowance_s <= ce_time <= received_at +
    max_skew_s` (`allowance_s`: how long the consumer was held up, consumer.py).
    Pure: the nonce's freshness is checked separately against the database.
    """
    terminal_id = signature_headers.get(TERMINAL_ID)
    nonce = signature_headers.get(NONCE)
    signature_b64 = signature_headers.get(SIGNATURE)
    if not terminal_id or not nonce or not signature_b64:
        return MISSING_SIGNATURE
    if not valid_terminal_id(terminal_id):
        return BAD_SIGNATURE
    if ce_source != terminal_source(terminal_id):
        return SOURCE_MISMATCH
    if public_key is None:
        return UNKNOWN_TERMINAL
    if not _valid_nonce(nonce):
        return BAD_SIGNATURE
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return BAD_SIGNATURE
    if len(signature) != 64:
        return BAD_SIGNATURE
    message = signing_input(
        ce_type=ce_type,
        ce_id=ce_id,
        ce_source=ce_source,
        ce_time_header=ce_time_header,
        nonce=nonce,
        terminal_id=terminal_id,
        value=value,
    )
    try:
        _as_public_key(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return BAD_SIGNATURE
    signed_at = parse_ce_time(ce_time_header)
    if signed_at is None:
        return STALE_TIMESTAMP
    ahead = (signed_at - _as_datetime(received_at)).total_seconds()
    if ahead > max_skew_s or -ahead > max_skew_s + allowance_s:
        return STALE_TIMESTAMP
    return None


# --- raw Kafka headers -------------------------------------------------------------


def single_headers(
    headers: Sequence[tuple[str, bytes | str | None]], names: Sequence[str]
) -> dict[str, str] | None:
    """The given headers decoded; None when one of them is repeated or not UTF-8
    (a verifier and a decoder must never read different copies)."""
    found: dict[str, str] = {}
    wanted = set(names)
    for name, raw in headers:
        if name not in wanted:
            continue
        if name in found:
            return None
        if raw is None:
            continue
        try:
            found[name] = raw.decode() if isinstance(raw, bytes) else raw
        except UnicodeDecodeError:
            return None
    return found


def terminal_id_of(headers: Sequence[tuple[str, bytes | str | None]]) -> str | None:
    """The x-terminal-id of a record, to look up its key (None when absent or repeated)."""
    found = single_headers(headers, (TERMINAL_ID,))
    return found.get(TERMINAL_ID) if found else None


def verify_record(
    headers: Sequence[tuple[str, bytes | str | None]],
    value: bytes,
    public_key: Ed25519PublicKey | str | None,
    *,
    received_at: datetime | int | float,
    max_skew_s: float,
    allowance_s: float = 0.0,
) -> str | None:
    """`verify_intake` on a Kafka record's raw headers (ce_time exactly as sent)."""
    found = single_headers(headers, _SIGNED_CE_HEADERS + SIGNATURE_HEADERS)
    if found is None:
        return BAD_SIGNATURE
    return verify_intake(
        signature_headers={k: v for k, v in found.items() if k in SIGNATURE_HEADERS},
        ce_type=found.get("ce_type", ""),
        ce_id=found.get("ce_id", ""),
        ce_source=found.get("ce_source", ""),
        ce_time_header=found.get("ce_time", ""),
        value=value,
        public_key=public_key,
        received_at=received_at,
        max_skew_s=max_skew_s,
        allowance_s=allowance_s,
    )


_TERMINAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def valid_terminal_id(terminal_id: str | None) -> bool:
    """A terminal id is printable ASCII of the id alphabet (never looked up, logged
    or stored otherwise: it comes from an unauthenticated header)."""
    return bool(terminal_id) and bool(_TERMINAL_ID.match(terminal_id))


class TerminalSigner:
    """A clinic terminal's signing side (the simulator, the demo and tests)."""

    def __init__(self, terminal_id: str, private_key: Ed25519PrivateKey | str | bytes):
        self.terminal_id = terminal_id
        self._key = _as_private_key(private_key)

    @classmethod
    def generate(cls, terminal_id: str) -> TerminalSigner:
        return cls(terminal_id, Ed25519PrivateKey.generate())

    @property
    def source(self) -> str:
        """The ce_source this terminal must use."""
        return terminal_source(self.terminal_id)

    @property
    def public_key_b64(self) -> str:
        return public_key_b64(self._key)

    def registry_entry(self, institution_id: str) -> dict[str, str]:
        """This terminal as an entry of TERMINALS_FILE."""
        return {
            "terminal_id": self.terminal_id,
            "institution_id": institution_id,
            "public_key": self.public_key_b64,
        }

    def sign(
        self,
        envelope_headers: Sequence[tuple[str, bytes]],
        value: bytes,
        *,
        nonce: str | None = None,
    ) -> list[tuple[str, bytes]]:
        """The envelope's headers (e.g. from `to_headers`) plus the signature headers.

        Any x-terminal-id / x-nonce / x-signature already present are replaced.
        """
        found = single_headers(envelope_headers, _SIGNED_CE_HEADERS)
        if found is None or any(name not in found for name in _SIGNED_CE_HEADERS):
            raise ValueError(
                "envelope headers need exactly one each of " + ", ".join(_SIGNED_CE_HEADERS)
            )
        signed = sign_intake(
            self._key,
            terminal_id=self.terminal_id,
            ce_type=found["ce_type"],
            ce_id=found["ce_id"],
            ce_source=found["ce_source"],
            ce_time_header=found["ce_time"],
            value=value,
            nonce=nonce,
        )
        kept = [(k, v) for k, v in envelope_headers if k not in SIGNATURE_HEADERS]
        return kept + [(k, v.encode()) for k, v in signed.items()]


# --- the registry and nonces (PostgreSQL; tables in migrations/0002_intake_auth.sql) ---


@dataclass(frozen=True)
class Terminal:
    terminal_id: str
    institution_id: str
    public_key: str
    active: bool


async def get_terminal(conn: asyncpg.Connection, terminal_id: str) -> Terminal | None:
    row = await conn.fetchrow(
        "SELECT terminal_id, institution_id, public_key, active FROM terminals"
        " WHERE terminal_id = $1",
        terminal_id,
    )
    return Terminal(**dict(row)) if row else None


async def terminal_key(conn: asyncpg.Connection, terminal_id: str) -> Ed25519PublicKey | None:
    """The registered public key of an active terminal, or None."""
    terminal = await get_terminal(conn, terminal_id)
    if terminal is None or not terminal.active:
        return None
    return load_public_key(terminal.public_key)


def parse_terminals(text: str, origin: str = "terminals file") -> list[Terminal]:
    """The terminals of a TERMINALS_FILE text, every key checked.

    The file is a list of {terminal_id, institution_id, public_key[, active]}
    (or a mapping with that list under "terminals").
    """
    data = yaml.safe_load(text) or []
    if isinstance(data, dict):
        data = data.get("terminals") or []
    if not isinstance(data, list):
        raise ValueError(f"{origin}: expected a list of terminals")
    terminals = []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ValueError(f"{origin}: entry {index} is not a mapping")
        missing = [f for f in ("terminal_id", "institution_id", "public_key") if not entry.get(f)]
        if missing:
            raise ValueError(f"{origin}: entry {index} lacks {', '.join(missing)}")
        terminal_id = str(entry["terminal_id"])
        public_key = str(entry["public_key"]).strip()
        try:
            load_public_key(public_key)
        except ValueError as exc:
            raise ValueError(f"{origin}: terminal {terminal_id}: {exc}") from None
        terminals.append(
            Terminal(
                terminal_id=terminal_id,
                institution_id=str(entry["institution_id"]),
                public_key=public_key,
                active=bool(entry.get("active", True)),
            )
        )
    return terminals


async def load_terminals(conn: asyncpg.Connection, path: Path | str) -> int:
    """Make the registry what the YAML file says (see `parse_terminals`); returns
    how many terminals the file lists.

    The file is authoritative: every key is checked before anything is
    written, and a terminal the registry holds but the file no longer lists is
    revoked (active false: its row stays, for the records it signed).
    """
    text = await asyncio.to_thread(Path(path).read_text)
    terminals = parse_terminals(text, str(path))
    async with conn.transaction():
        await register_terminals(conn, terminals)
        await conn.execute(
            "UPDATE terminals SET active = false WHERE active AND NOT terminal_id = ANY($1::text[])",
            [t.terminal_id for t in terminals])
    return len(terminals)


async def register_terminals(conn: asyncpg.Connection, terminals) -> None:
    """Add or update these terminals, leaving the others as they are (a tool
    adding one terminal to a running registry; start-up uses load_terminals)."""
    await conn.executemany(
        """INSERT INTO terminals (terminal_id, institution_id, public_key, active)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (terminal_id) DO UPDATE
           SET institution_id = EXCLUDED.institution_id,
               public_key = EXCLUDED.public_key,
               active = EXCLUDED.active""",
        [(t.terminal_id, t.institution_id, t.public_key, t.active) for t in terminals],
    )


async def check_and_store_nonce(
    conn: asyncpg.Connection, terminal_id: str, nonce: str, signed_at: datetime
) -> bool:
    """Record a nonce; False if this terminal used it before (a replay).

    Call it in the handler's transaction, after the inbox claim (see module doc).
    """
    stored = await conn.fetchval(
        """INSERT INTO intake_nonces (terminal_id, nonce, signed_at) VALUES ($1, $2, $3)
           ON CONFLICT (terminal_id, nonce) DO NOTHING
           RETURNING true""",
        terminal_id,
        nonce,
        signed_at,
    )
    return bool(stored)


async def prune_nonces(conn: asyncpg.Connection, older_than: datetime) -> int:
    """Forget nonces signed before `older_than`; returns how many."""
    status = await conn.execute("DELETE FROM intake_nonces WHERE signed_at < $1", older_than)
    return int(status.split()[-1])


@dataclass(frozen=True)
class IntakeAuth:
    """Outcome of `authenticate_record`: `code` None means accepted."""

    code: str | None
    terminal: Terminal | None


async def authenticate_record(
    conn: asyncpg.Connection,
    headers: Sequence[tuple[str, bytes | str | None]],
    value: bytes,
    *,
    received_at: datetime | int | float,
    max_skew_s: float,
) -> IntakeAuth:
    """Every check, nonce included, for one record; run it inside the handler's
    transaction after the inbox claim. `terminal` (when known) gives the
    institution the terminal is registered to."""
    terminal_id = terminal_id_of(headers)
    terminal = await get_terminal(conn, terminal_id) if terminal_id else None
    key = load_public_key(terminal.public_key) if terminal and terminal.active else None
    code = verify_record(headers, value, key, received_at=received_at, max_skew_s=max_skew_s)
    if code is not None:
        return IntakeAuth(code, terminal)
    found = single_headers(headers, (NONCE, "ce_time"))
    assert found is not None and terminal_id is not None  # verified above
    signed_at = parse_ce_time(found["ce_time"])
    assert signed_at is not None
    if not await check_and_store_nonce(conn, terminal_id, found[NONCE], signed_at):
        return IntakeAuth(REPLAYED_NONCE, terminal)
    return IntakeAuth(None, terminal)


def nonce_horizon(now: datetime, max_skew_s: float) -> datetime:
    """The `older_than` to prune with: nonces older than twice the skew cannot pass
    the time check again."""
    return now - timedelta(seconds=2 * max_skew_s)

"""CloudEvents 1.0 envelope in the Kafka binary binding (DESIGN §4).

The payload is the JSON of the event model; the attributes travel as Kafka
headers: `ce_specversion`, `ce_id`, `ce_source`, `ce_type`, `ce_time`,
`ce_subject`, `ce_aggseq`, `content-type`, W3C `traceparent` / `tracestate`,
plus the other headers we carry (`extra`: e.g. the intake signature headers).

`aggseq` is an extension of our own: the per-aggregate counter, a decimal
integer counting 1, 2, 3… per (ce_source, ce_subject), so a consumer sees a
gap or a reordering of one aggregate's events (a gap also where the broker
refused a row for good, see the outbox). It is not the CloudEvents
`sequence` extension, whose values are ordered per source and compare as
strings; CloudEvents attribute names allow only a–z and 0–9.

Attribute values must be printable: a control character (NUL, ESC, a line
break…) in an attribute is refused as a bad header.

Errors name header names and a code, never a header's value.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"

H_SPECVERSION = "ce_specversion"
H_ID = "ce_id"
H_SOURCE = "ce_source"
H_TYPE = "ce_type"
H_TIME = "ce_time"
H_SUBJECT = "ce_subject"
H_AGGSEQ = "ce_aggseq"
H_CONTENT_TYPE = "content-type"
H_TRACEPARENT = "traceparent"
H_TRACESTATE = "tracestate"

REQUIRED_HEADERS = (H_SPECVERSION, H_ID, H_SOURCE, H_TYPE, H_TIME, H_CONTENT_TYPE)
RESERVED_HEADERS = frozenset(
    REQUIRED_HEADERS + (H_SUBJECT, H_AGGSEQ, H_TRACEPARENT, H_TRACESTATE)
)

# Attribute values longer than this are refused (a header is not a payload).
MAX_ATTRIBUTE_LEN = 512
# ce_aggseq is stored as a PostgreSQL bigint.
MAX_AGGSEQ = 2**63 - 1

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_DECIMAL = re.compile(r"^[0-9]{1,19}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class EnvelopeError(ValueError):
    """A record whose headers are not a valid envelope. Never carries values."""

    def __init__(self, code: str, fields: tuple[str, ...] = ()) -> None:
        self.code = code
        self.fields = tuple(fields)
        super().__init__(f"{code}: {', '.join(self.fields)}" if self.fields else code)


@dataclass(frozen=True)
class Envelope:
    """The CloudEvents attributes of one Kafka record."""

    id: str
    source: str
    type: str
    time: datetime
    subject: str | None = None
    aggseq: int | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise ValueError("Envelope.time must be timezone-aware")
        object.__setattr__(self, "time", self.time.astimezone(UTC))
        if self.aggseq is not None and not 0 <= self.aggseq <= MAX_AGGSEQ:
            raise ValueError("Envelope.aggseq out of range")
        clash = sorted(k for k in self.extra if k.lower() in RESERVED_HEADERS)
        if clash:
            raise ValueError(f"Envelope.extra uses reserved header names: {clash}")
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))


def new_event_id() -> str:
    """A fresh `ce_id` (UUID version 4)."""
    return str(uuid.uuid4())


def format_time(t: datetime) -> str:
    """RFC 3339 in UTC with 'Z' and microseconds, as `ce_time` carries it."""
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def to_headers(env: Envelope) -> list[tuple[str, bytes]]:
    """Kafka headers of the binary binding, in a fixed order."""
    pairs: list[tuple[str, str]] = [
        (H_SPECVERSION, SPECVERSION),
        (H_ID, env.id),
        (H_SOURCE, env.source),
        (H_TYPE, env.type),
        (H_TIME, format_time(env.time)),
    ]
    if env.subject is not None:
        pairs.append((H_SUBJECT, env.subject))
    if env.aggseq is not None:
        pairs.append((H_AGGSEQ, str(env.aggseq)))
    pairs.append((H_CONTENT_TYPE, CONTENT_TYPE))
    if env.traceparent is not None:
        pairs.append((H_TRACEPARENT, env.traceparent))
    if env.tracestate is not None:
        pairs.append((H_TRACESTATE, env.tracestate))
    pairs.extend(env.extra.items())
    return [(name, value.encode("utf-8")) for name, value in pairs]


def from_headers(headers: Sequence[tuple[str | bytes, bytes | None]]) -> Envelope:
    """Decode Kafka headers into an Envelope; raises EnvelopeError."""
    found = _collect(headers)

    missing = tuple(h for h in REQUIRED_HEADERS if h not in found)
    if missing:
        raise EnvelopeError("missing_header", missing)

    if found[H_SPECVERSION] != SPECVERSION:
        raise EnvelopeError("unsupported_specversion", (H_SPECVERSION,))
    if not _is_json(found[H_CONTENT_TYPE]):
        raise EnvelopeError("bad_content_type", (H_CONTENT_TYPE,))
    for name in (H_ID, H_SOURCE, H_TYPE, H_SUBJECT):
        if name in found and (not 0 < len(found[name]) <= MAX_ATTRIBUTE_LEN
                              or _CONTROL.search(found[name])):
            raise EnvelopeError("bad_header", (name,))

    extra = {k: v for k, v in found.items() if k not in RESERVED_HEADERS}
    return Envelope(
        id=found[H_ID],
        source=found[H_SOURCE],
        type=found[H_TYPE],
        time=_parse_time(found[H_TIME]),
        subject=found.get(H_SUBJECT),
        aggseq=_parse_aggseq(found[H_AGGSEQ]) if H_AGGSEQ in found else None,
        traceparent=found.get(H_TRACEPARENT),
        tracestate=found.get(H_TRACESTATE),
        extra=extra,
    )


def _collect(headers: Sequence[tuple[str | bytes, bytes | None]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = _text(raw_name, "?").lower()
        if name in found:
            raise EnvelopeError("duplicate_header", (name,))
        if raw_value is None or not isinstance(raw_value, bytes | bytearray):
            raise EnvelopeError("bad_header", (name,))
        found[name] = _text(raw_value, name)
    return found


def _text(raw: str | bytes | bytearray, name: str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise EnvelopeError("bad_header", (name,)) from None


def _is_json(value: str) -> bool:
    media, *params = (part.strip().lower() for part in value.split(";"))
    if media != CONTENT_TYPE:
        return False
    return all(p.replace(" ", "") in ("charset=utf-8", 'charset="utf-8"') for p in params)


def parse_time(value: str) -> datetime | None:
    """An RFC 3339 time (any case of T and Z, up to nanoseconds) as an aware
    UTC datetime, or None when it is not one, or not representable in UTC
    (9999-12-31T23:59:59-01:00 is past Python's last instant)."""
    if not _RFC3339.match(value):
        return None
    text = value.upper()
    if "." in text:  # Python keeps microseconds: cut nanosecond digits.
        head, rest = text.split(".", 1)
        digits = re.match(r"\d+", rest).group(0)  # type: ignore[union-attr]
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits):]}"
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _parse_time(value: str) -> datetime:
    parsed = parse_time(value)
    if parsed is None:
        raise EnvelopeError("bad_header", (H_TIME,))
    return parsed


def _parse_aggseq(value: str) -> int:
    if not _DECIMAL.match(value) or int(value) > MAX_AGGSEQ:
        raise EnvelopeError("bad_header", (H_AGGSEQ,))
    return int(value)

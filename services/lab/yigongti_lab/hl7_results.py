"""Analyser results in HL7 v2 (ORU^R01) → `AnalyserResults`, and the ACK that answers.

Analysers and LIS bridges (LIS 接口) send one ORU^R01 per run or per tube:

    MSH  sender (MSH-3/4), message id (MSH-10), version (MSH-12), charset (MSH-18)
    PID  the patient: ignored; nothing of it is read or copied
    ORC  the order (ignored)
    OBR  one tube: barcode in OBR-3 (filler), OBR-2 (placer) or SPM-2; OBR-7 time
    OBX  one result: OBX-2 type (NM, SN, ST, CE/CWE), OBX-3 code^text^system,
         OBX-5 value, OBX-6 unit, OBX-11 status, OBX-14 time
    SPM  the specimen (v2.5+): its barcode; OBX after SPM describe the specimen

python-hl7 (`hl7` on PyPI) splits the message; this module decides what it
means. Each barcode becomes one `AnalyserResults` (OBR groups of the same tube
are merged). Codes and units are mapped through the catalogue: `map_code`
turns OBX-3 into a catalogue test code, and OBX-6 must be the catalogue's unit
(or a spelling of it from policy/hl7_units.yaml).

The answer follows HL7 v2.5 §2.9.2 (original mode acknowledgement):

    AA  accepted (the MLLP server says so only once the results are on Kafka)
    AE  application error: the message is HL7 but its content cannot be taken —
        unknown code, unit mismatch, unreadable value, bad or missing barcode.
        Nothing of the message is published.
    AR  reject: not ORU^R01, unsupported version, charset or processing id,
        malformed segments; also "could not store now, send again".

MSA-3 and ERR carry the reason: where (segment, its occurrence, field) and
what, never a result value or anything of PID.

Character sets: MSH-18 "UNICODE UTF-8", "GB 18030-2000", "GB18030", "GBK",
"GB 2312", "ASCII", "8859/1"; without MSH-18 UTF-8, then GB18030. The ACK is
encoded like the message.

Times: an HL7 timestamp without an offset is China Standard Time (UTC+08:00,
北京时间) — what analysers in Xinjiang's hospitals are set to; it is stored in UTC.
"""

from __future__ import annotations

import logging
import re
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from functools import cache
from importlib.resources import files
from typing import Any

import hl7
import yaml
from pydantic import ValidationError
from yigongti_contracts.lab.parts import AnalyserObservation
from yigongti_contracts.lab.v1 import AnalyserResults

log = logging.getLogger("yigongti.lab.hl7")

CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")

CodeMapper = Callable[[str, str], "str | None"]
"""`map_code(obx3_identifier, coding_system) -> catalogue test code | None`."""


class AckCode(StrEnum):
    AA = "AA"  # application accept
    AE = "AE"  # application error
    AR = "AR"  # application reject


# HL7 table 0357 (message error condition codes) used in ERR-3.
HL7_SEGMENT_SEQUENCE = "100"
HL7_REQUIRED_FIELD_MISSING = "101"
HL7_DATA_TYPE_ERROR = "102"
HL7_TABLE_VALUE_NOT_FOUND = "103"
HL7_UNSUPPORTED_MESSAGE_TYPE = "200"
HL7_UNSUPPORTED_EVENT = "201"
HL7_UNSUPPORTED_PROCESSING_ID = "202"
HL7_UNSUPPORTED_VERSION = "203"
HL7_INTERNAL_ERROR = "207"
_HL7_ERROR_TEXT = {
    HL7_SEGMENT_SEQUENCE: "Segment sequence error",
    HL7_REQUIRED_FIELD_MISSING: "Required field missing",
    HL7_DATA_TYPE_ERROR: "Data type error",
    HL7_TABLE_VALUE_NOT_FOUND: "Table value not found",
    HL7_UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    HL7_UNSUPPORTED_EVENT: "Unsupported event code",
    HL7_UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    HL7_UNSUPPORTED_VERSION: "Unsupported version id",
    HL7_INTERNAL_ERROR: "Application internal error",
}


@dataclass(frozen=True)
class Hl7Error:
    """Why a message is not accepted; `text` names the place, never a value of PID
    or a result (it goes back to the sender in MSA-3 and ERR-8)."""

    ack: AckCode
    reason: str  # a code: "unknown_code", "unit_mismatch", "malformed_segment"…
    text: str
    segment: str | None = None  # "OBX"
    sequence: int | None = None  # which occurrence of that segment, from 1
    field: int | None = None  # 3 for OBX-3
    hl7_code: str = HL7_INTERNAL_ERROR


# --- character sets ----------------------------------------------------------------

# MSH-18 (HL7 table 0211, plus "GBK" and "GB2312" that Chinese LIS send) → (decode, encode).
# GBK and GB 2312 are read as GB18030, which contains both byte for byte.
_CHARSETS: dict[str, tuple[str, str]] = {
    "UNICODEUTF-8": ("utf-8", "utf-8"),
    "UTF-8": ("utf-8", "utf-8"),
    "UTF8": ("utf-8", "utf-8"),
    "GB18030-2000": ("gb18030", "gb18030"),
    "GB18030-2005": ("gb18030", "gb18030"),
    "GB18030": ("gb18030", "gb18030"),
    "GBK": ("gb18030", "gbk"),
    "GB2312": ("gb18030", "gbk"),
    "GB2312-80": ("gb18030", "gbk"),
    "ASCII": ("ascii", "ascii"),
    "8859/1": ("latin-1", "latin-1"),
}
_UNDECLARED = ("utf-8", "gb18030")


def _charset_key(label: str) -> str:
    return re.sub(r"\s+", "", label).upper()


# --- the MSH, read from bytes (works even when the rest does not) --------------------


@dataclass(frozen=True)
class _Header:
    """MSH fields as sent (still escaped), for the checks and the ACK."""

    field_sep: str = "|"
    encoding_chars: str = "^~\\&"
    fields: tuple[str, ...] = ()  # fields[n] is MSH-n for n >= 3 (0..2 unused)

    def get(self, n: int) -> str:
        return self.fields[n] if n < len(self.fields) else ""

    def component(self, n: int, index: int = 1) -> str:
        first_repetition = self.get(n).split(self.repetition_sep)[0]
        parts = first_repetition.split(self.component_sep)
        return parts[index - 1] if index <= len(parts) else ""

    @property
    def component_sep(self) -> str:
        return self.encoding_chars[0]

    @property
    def repetition_sep(self) -> str:
        return self.encoding_chars[1]

    @property
    def escape_char(self) -> str:
        return self.encoding_chars[2]

    @property
    def subcomponent_sep(self) -> str:
        return self.encoding_chars[3]


_DEFAULT_HEADER = _Header()


def _first_segment(raw: bytes) -> bytes:
    return re.split(rb"[\r\n]", raw, maxsplit=1)[0]


def _header_from_text(line: str) -> _Header | None:
    """The MSH of a segment's text, None when its separators are unusable
    (`_fallback_header` may still read who sent it)."""
    if not line.startswith("MSH") or len(line) < 8:
        return None
    sep = line[3]
    parts = line.split(sep)
    encoding_chars = parts[1] if len(parts) > 1 else ""
    usable = (
        not sep.isalnum()
        and sep not in "\r\n "
        and 4 <= len(encoding_chars) <= 5
        and len(set(encoding_chars + sep)) == len(encoding_chars) + 1
        and not any(c.isalnum() or c.isspace() for c in encoding_chars)
    )
    if not usable:
        return None
    return _Header(sep, encoding_chars[:4], ("", sep, encoding_chars, *parts[2:]))


def _usable_field_sep(sep: str) -> bool:
    return not sep.isalnum() and not sep.isspace()


def _fallback_header(line: str) -> _Header | None:
    """When MSH-2 is unusable but the field separator is not: MSH-3 to MSH-12 as
    whole fields (components cannot be told apart without MSH-2), escaped in
    the ACK's own separators, so the refusal addresses the sender and names
    its message (MSA-2). None when the field separator is unusable too."""
    if not line.startswith("MSH") or len(line) < 4 or not _usable_field_sep(line[3]):
        return None
    sent_sep = line[3]
    parts = line.split(sent_sep)[:13]  # "MSH", MSH-2, MSH-3 … MSH-12
    ack_sep = sent_sep if sent_sep not in _DEFAULT_HEADER.encoding_chars else "|"
    ack = _Header(ack_sep, _DEFAULT_HEADER.encoding_chars)
    fields = [_escape(part, ack) for part in parts[2:]]
    return _Header(ack_sep, ack.encoding_chars, ("", ack_sep, ack.encoding_chars, *fields))


def _any_header(line: str) -> _Header:
    """The MSH as well as it can be read, to address an ACK."""
    return _header_from_text(line) or _fallback_header(line) or _DEFAULT_HEADER


def _declared_charset(raw: bytes) -> str:
    """MSH-18 (first repetition) as sent, "" when absent.

    Read from the MSH decoded as text, not split as bytes: a GBK character's
    second byte can be "|", "^", "~" or "\\" (0x7C, 0x5E, 0x7E, 0x5C), as in 東 or 億.
    """
    line = _first_segment(raw)
    for codec in ("utf-8", "gb18030", "latin-1"):
        try:
            text = line.decode(codec)
            break
        except UnicodeDecodeError:
            continue
    header = _header_from_text(text)
    if header is None:
        return ""
    return header.component(18).strip()


# --- catalogue: codes and units ----------------------------------------------------

_LOINC_SYSTEMS = frozenset({"LN", "LOINC", "HTTP://LOINC.ORG", "2.16.840.1.113883.6.1"})


def catalogue_code_mapper(catalogue: Mapping[str, Any]) -> CodeMapper:
    """The default `map_code` over catalogue entries (any objects; read with getattr).

    An entry matches OBX-3 when:
    1. one of its `analyser_codes` (if the entry has that list) equals the identifier:
       a string matches under any coding system; a mapping {"code", "system"} (or
       an object with those attributes) only under that system;
    2. the coding system is LOINC ("LN") and the identifier is its `loinc`;
    3. the identifier is its catalogue `code` (letter case ignored: "Na" is NA), or
       its `loinc` under any system (bridges often send LOINC codes as local).
    """
    analyser: dict[tuple[str | None, str], str] = {}
    by_code: dict[str, str] = {}
    by_loinc: dict[str, str] = {}
    for key, entry in catalogue.items():
        test_code = str(getattr(entry, "code", None) or key)
        by_code.setdefault(test_code.upper(), test_code)
        loinc = getattr(entry, "loinc", None)
        if loinc:
            by_loinc.setdefault(str(loinc), test_code)
        for alias in getattr(entry, "analyser_codes", None) or ():
            if isinstance(alias, str):
                analyser.setdefault((None, alias.strip()), test_code)
                continue
            if isinstance(alias, Mapping):
                code, system = alias.get("code"), alias.get("system")
            else:
                code, system = getattr(alias, "code", None), getattr(alias, "system", None)
            if code:
                system_key = _system_key(str(system)) if system else None
                analyser.setdefault((system_key, str(code).strip()), test_code)

    def map_code(identifier: str, coding_system: str) -> str | None:
        identifier = identifier.strip()
        if not identifier:
            return None
        system = _system_key(coding_system)
        hit = analyser.get((system, identifier)) or analyser.get((None, identifier))
        if hit:
            return hit
        if system in _LOINC_SYSTEMS:
            return by_loinc.get(identifier)
        return by_code.get(identifier.upper()) or by_loinc.get(identifier)

    return map_code


def _system_key(system: str) -> str:
    return system.strip().upper()


@cache
def unit_synonyms() -> dict[str, str]:
    """Spelling → UCUM code, from policy/hl7_units.yaml."""
    raw = yaml.safe_load((files("yigongti_lab") / "policy" / "hl7_units.yaml").read_text())
    table: dict[str, str] = {}
    for canonical, spellings in raw["synonyms"].items():
        for spelling in spellings:
            table[str(spelling)] = str(canonical)
    return table


def canonical_unit(sent: str, expected: str | None) -> str | None:
    """The catalogue's unit `expected` when `sent` spells it, else None."""
    if expected is None:
        return None
    sent = sent.strip()
    candidate = unit_synonyms().get(sent, sent)
    if candidate == expected or candidate.casefold() == expected.casefold():
        return expected
    return None


# --- values ------------------------------------------------------------------------

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_NUMERIC_TEXT = re.compile(rf"^\s*(<=|>=|<|>|=)?\s*({_NUMBER})\s*$")
_CODED = re.compile(r"^[A-Za-z0-9+._-]{1,16}$")
_COMPARATORS = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "=": None, "": None}
_TS = re.compile(r"^(\d{12}(?:\d{2}(?:\.\d{1,4})?)?)([+-]\d{4})?$")


class _ValueError(Exception):
    def __init__(self, reason: str, text: str, field_no: int, hl7_code: str):
        super().__init__(text)
        self.reason, self.text, self.field_no, self.hl7_code = reason, text, field_no, hl7_code


def _number(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise _ValueError("bad_value", "value is not a number", 5, HL7_DATA_TYPE_ERROR) from None


def parse_hl7_time(text: str, local: timezone = CHINA_STANDARD_TIME) -> datetime:
    """An HL7 TS/DTM (to the minute at least) as aware UTC; no offset means `local`."""
    match = _TS.fullmatch(text.strip())
    if not match:
        raise ValueError("not an HL7 timestamp to the minute")
    parsed = hl7.parse_datetime(text.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=local)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01 east of UTC, 9999-12-31 west of it
        raise ValueError("HL7 timestamp outside the calendar in UTC") from None


# --- the translation -----------------------------------------------------------------


@dataclass(frozen=True)
class Translation:
    """What one message says: results to publish (with their ce_id), or errors;
    `ack()` is the answer."""

    records: tuple[tuple[str, AnalyserResults], ...]
    errors: tuple[Hl7Error, ...]
    header: _Header = field(default=_DEFAULT_HEADER, repr=False)
    encode_as: str = "utf-8"
    application: str = "YIGONGTI-LAB"
    facility: str = ""

    @property
    def results(self) -> tuple[AnalyserResults, ...]:
        return tuple(result for _, result in self.records)

    @property
    def ack_code(self) -> AckCode:
        if not self.errors:
            return AckCode.AA
        return AckCode.AR if any(e.ack is AckCode.AR for e in self.errors) else AckCode.AE

    def refused(self, error: Hl7Error) -> Translation:
        """This message answered with `error` instead (e.g. the results could not
        be stored); nothing of it is to be published."""
        return Translation((), (error,), self.header, self.encode_as, self.application,
                           self.facility)

    def ack(self, *, now: datetime | None = None, control_id: str | None = None) -> bytes:
        """The ACK message (without MLLP framing), encoded like the message."""
        return build_ack(self, now=now, control_id=control_id)


def build_ack(
    translation: Translation, *, now: datetime | None = None, control_id: str | None = None
) -> bytes:
    """MSH (sender and receiver of the message swapped), MSA, and one ERR per error."""
    h = translation.header
    sep = h.field_sep
    comp, sub = h.component_sep, h.subcomponent_sep

    def esc(text: str) -> str:
        return _escape(text, h)

    now = (now or datetime.now(UTC)).astimezone(CHINA_STANDARD_TIME)
    trigger = h.component(9, 2)
    msh = [
        "MSH",
        h.encoding_chars,
        h.get(5) or esc(translation.application),  # MSH-3 ← the message's MSH-5
        h.get(6) or esc(translation.facility),  # MSH-4 ← MSH-6
        h.get(3),  # MSH-5 ← MSH-3
        h.get(4),  # MSH-6 ← MSH-4
        now.strftime("%Y%m%d%H%M%S") + "+0800",
        "",
        comp.join(["ACK", esc(trigger), "ACK"]) if trigger else "ACK",
        esc(control_id or hl7.generate_message_control_id()),
        h.get(11) or "P",
        h.get(12) or "2.5.1",
    ]
    if h.get(18):
        msh += [""] * 5 + [h.get(18)]  # MSH-13..17 empty, MSH-18 as sent
    code = translation.ack_code
    first = translation.errors[0].text if translation.errors else ""
    segments = [
        sep.join(msh),
        sep.join(["MSA", code.value, h.get(10), esc(first[:80])]).rstrip(sep),
    ]
    before_v25 = _before_v25(h.component(12) or "2.5.1")
    for error in translation.errors[:20]:
        location = [error.segment or "", str(error.sequence or ""), str(error.field or "")]
        if not error.segment:
            location = ["", "", ""]
        hl7_text = _HL7_ERROR_TEXT.get(error.hl7_code, "")
        # ERR-1 (v2.3/2.4 ELD): segment^sequence^field^code&text&HL70357; kept
        # from v2.5 on for backward compatibility.
        err1 = comp.join([*location, sub.join([error.hl7_code, esc(hl7_text), "HL70357"])])
        if before_v25:  # ERR-2 to ERR-8 exist from v2.5: a strict v2.3/2.4 parser refuses them
            segments.append(sep.join(["ERR", err1]))
            continue
        segments.append(sep.join([
            "ERR",
            err1,
            comp.join(location) if error.segment else "",  # ERR-2 location
            comp.join([error.hl7_code, esc(hl7_text), "HL70357"]),  # ERR-3
            "E",  # ERR-4 severity
            "",
            "",
            "",
            esc(error.text),  # ERR-8 user message
        ]).rstrip(sep))
    text = "\r".join(segments) + "\r"
    return text.encode(translation.encode_as, errors="replace")


def _before_v25(version: str) -> bool:
    """True for the HL7 versions before 2.5 ("2.3", "2.3.1", "2.4")."""
    match = re.match(r"^2\.(\d+)", version)
    return match is not None and int(match.group(1)) < 5


def _escape(text: str, h: _Header) -> str:
    text = re.sub(r"[\r\n\t\x00-\x1f]", " ", text)
    out = []
    for c in text:
        if c == h.escape_char:
            out.append(f"{c}E{c}")
        elif c == h.field_sep:
            out.append(f"{h.escape_char}F{h.escape_char}")
        elif c == h.component_sep:
            out.append(f"{h.escape_char}S{h.escape_char}")
        elif c == h.repetition_sep:
            out.append(f"{h.escape_char}R{h.escape_char}")
        elif c == h.subcomponent_sep:
            out.append(f"{h.escape_char}T{h.escape_char}")
        else:
            out.append(c)
    return "".join(out)


_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")
_SUPPORTED_VERSIONS = re.compile(r"^2\.[3-9](\.\d+)?$")
_FINAL = frozenset({"F", "C", ""})  # final, corrected; empty taken as final
_NOT_FINAL = frozenset({"P", "R", "S", "I", "D", "W", "X", "U", "N", "A", "O"})
_CE_ID_NAMESPACE = uuid.UUID("4e1f2a8c-3b7d-5a9e-8c61-0d2f7b9a1c55")


@dataclass
class _Group:
    """One OBR with its OBX (and SPM)."""

    obr: Any
    obr_seq: int
    observations: list[tuple[int, Any]] = field(default_factory=list)  # (OBX occurrence, seg)
    specimens: list[Any] = field(default_factory=list)


@dataclass
class _Tube:
    barcode: str
    observations: list[AnalyserObservation] = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)  # code → OBX occurrence
    times: list[datetime] = field(default_factory=list)  # OBX-14
    obr_times: list[datetime] = field(default_factory=list)  # OBR-7


class ResultsTranslator:
    """ORU^R01 bytes → `Translation`. One per listener; stateless between messages.

    - `catalogue`: test code → entry (default `load_catalogue()`); an entry's `unit`
      is the unit OBX-6 must give.
    - `map_code(obx3_identifier, coding_system)`: default `catalogue_code_mapper`.
      Tried with OBX-3.1/3.3, then with the alternate code OBX-3.4/3.6.
    - `analyser_id`: the device's registered id, when this listener serves one
      device; else `analyser_ids` maps "MSH-3.1" or "MSH-3.1^MSH-4.1" to it; else
      MSH-3.1 (or MSH-4.1) itself when it is a valid identifier.
    - `barcode_fields`: where the tube's barcode is, first non-empty wins (some
      analysers put their sample number in OBR-3: give ("OBR-2", "SPM-2") then).
    - `processing_ids`: MSH-11 values accepted ("P" production; "T" training and
      "D" debugging messages are refused so they never reach a patient's results).
    - `application`/`facility`: MSH-3/4 of the ACK when the message left MSH-5/6 empty.
    - `allowed_senders`: when given, the analysers this listener takes messages
      from, as "MSH-3.1" or "MSH-3.1^MSH-4.1"; any other sender is refused (AR).
      A sender names itself: the peer-address allow-list (mllp.py) is the
      control, this one keeps a known peer's messages to its known analysers.
    """

    def __init__(
        self,
        *,
        catalogue: Mapping[str, Any] | None = None,
        map_code: CodeMapper | None = None,
        analyser_id: str | None = None,
        analyser_ids: Mapping[str, str] | None = None,
        barcode_fields: Iterable[str] = ("OBR-3", "OBR-2", "SPM-2"),
        processing_ids: Iterable[str] = ("P",),
        local_timezone: timezone = CHINA_STANDARD_TIME,
        application: str = "YIGONGTI-LAB",
        facility: str = "",
        allowed_senders: Iterable[str] | None = None,
    ) -> None:
        if catalogue is None:
            from .catalogue import load_catalogue

            catalogue = load_catalogue()
        self.catalogue = catalogue
        self.map_code = map_code or catalogue_code_mapper(catalogue)
        self.analyser_id = analyser_id
        self.analyser_ids = dict(analyser_ids or {})
        self.barcode_fields = tuple(barcode_fields)
        unknown = set(self.barcode_fields) - {"OBR-3", "OBR-2", "SPM-2"}
        if unknown:
            raise ValueError(f"barcode_fields: unknown {sorted(unknown)}")
        self.processing_ids = frozenset(processing_ids)
        self.local_timezone = local_timezone
        self.application = application
        self.facility = facility
        self.allowed_senders = (frozenset(s.strip() for s in allowed_senders if s.strip())
                                if allowed_senders is not None else None)

    # -- entry points ---------------------------------------------------------------

    def translate(self, raw: bytes) -> Translation:
        """The results of one message (MLLP framing already removed), or its errors."""
        raw = raw.strip(b"\r\n\t \x0b\x1c")
        header, encode_as, text, error = self._decode(raw)
        if error is not None:
            return self._translation((), [error], header, encode_as)
        try:
            errors, records = self._translate_text(text, header)
        except Exception as exc:  # a bug here must still be answered (AR: send again later)
            # Type and place only: exception messages may quote message content.
            where = traceback.extract_tb(exc.__traceback__)[-1]
            log.error("hl7 translation failed: %s at %s:%s", type(exc).__name__,
                      where.filename.rsplit("/", 1)[-1], where.lineno)
            errors = [Hl7Error(AckCode.AR, "processing_error",
                               "internal error while reading the message",
                               hl7_code=HL7_INTERNAL_ERROR)]
            records = []
        if errors:
            records = []
        return self._translation(tuple(records), errors, header, encode_as)

    def refuse(self, raw_head: bytes, error: Hl7Error) -> Translation:
        """A Translation answering `error` for a message of which only the start is
        known (an oversized frame): the ACK still addresses its sender."""
        header, encode_as, _, _ = self._decode(raw_head.strip(b"\r\n\t \x0b\x1c"))
        return self._translation((), [error], header, encode_as)

    # -- decoding -------------------------------------------------------------------

    def _translation(self, records, errors, header, encode_as) -> Translation:
        return Translation(tuple(records), tuple(errors), header, encode_as, self.application,
                           self.facility)

    def _decode(self, raw: bytes) -> tuple[_Header, str, str, Hl7Error | None]:
        """(header, ACK codec, text, error) — error None when the text is usable."""
        declared = _declared_charset(raw)
        first = _first_segment(raw)
        if declared:
            codecs = _CHARSETS.get(_charset_key(declared))
            if codecs is None:
                header = _any_header(first.decode("utf-8", errors="replace"))
                return header, "utf-8", "", Hl7Error(
                    AckCode.AR, "unsupported_charset",
                    "MSH-18 character set not supported (use UNICODE UTF-8 or GB 18030-2000)",
                    "MSH", 1, 18, HL7_TABLE_VALUE_NOT_FOUND)
            decode_as, encode_as = codecs
            attempts: tuple[str, ...] = (decode_as,)
        else:
            attempts, encode_as = _UNDECLARED, "utf-8"
        text = None
        for codec in attempts:
            try:
                text = raw.decode(codec)
            except UnicodeDecodeError:
                continue
            if not declared:
                encode_as = codec
            break
        if text is None:
            header = _any_header(first.decode(attempts[0], errors="replace"))
            what = f"not valid {declared}" if declared else "neither UTF-8 nor GB18030"
            return header, encode_as, "", Hl7Error(
                AckCode.AR, "bad_encoding", f"message bytes are {what}",
                hl7_code=HL7_DATA_TYPE_ERROR)
        first_line = re.split(r"[\r\n]", text, maxsplit=1)[0]
        header = _header_from_text(first_line)
        if header is None and (fallback := _fallback_header(first_line)) is not None:
            return fallback, encode_as, "", Hl7Error(
                AckCode.AR, "bad_encoding_characters",
                "MSH-2 encoding characters are unusable: four distinct characters, neither "
                "letters, digits nor spaces, none the field separator",
                "MSH", 1, 2, HL7_DATA_TYPE_ERROR)
        if header is None:
            return _DEFAULT_HEADER, encode_as, "", Hl7Error(
                AckCode.AR, "not_hl7",
                "not an HL7 v2 message: it must begin with an MSH segment and its separators",
                "MSH", 1, None, HL7_SEGMENT_SEQUENCE)
        return header, encode_as, text, None

    # -- the message ----------------------------------------------------------------

    def _translate_text(
        self, text: str, header: _Header
    ) -> tuple[list[Hl7Error], list[tuple[str, AnalyserResults]]]:
        text = text.replace("\r\n", "\r").replace("\n", "\r")
        lines = [line for line in text.split("\r") if line.strip()]
        for index, line in enumerate(lines, start=1):
            name = line[:3]
            if not _SEGMENT_ID.match(name) or (len(line) > 3 and line[3] != header.field_sep):
                return [Hl7Error(AckCode.AR, "malformed_segment",
                                 f"segment {index} is malformed (no segment id and field "
                                 "separator)", None, None, None, HL7_SEGMENT_SEQUENCE)], []
            if name == "MSH" and index > 1:
                return [Hl7Error(AckCode.AR, "malformed_segment",
                                 "one message per frame: a second MSH found",
                                 "MSH", 2, None, HL7_SEGMENT_SEQUENCE)], []
        try:
            message = hl7.parse("\r".join(lines))
        except (hl7.HL7Exception, ValueError, IndexError, AssertionError):
            return [Hl7Error(AckCode.AR, "malformed_message", "the message cannot be parsed",
                             hl7_code=HL7_SEGMENT_SEQUENCE)], []

        refused = self._check_header(header)
        if refused:
            return [refused], []
        groups, structure_error = _groups(message)
        if structure_error:
            return [structure_error], []

        errors: list[Hl7Error] = []
        analyser_id = self._analyser_id(message.segment("MSH"), errors)
        message_time = _time_or_none(header.component(7), self.local_timezone)
        tubes: dict[str, _Tube] = {}
        skipped = 0
        for group in groups:
            barcode = self._barcode(group, errors)
            if barcode is None:
                continue
            tube = tubes.setdefault(barcode, _Tube(barcode))
            obr_time = _field(group.obr, 7)
            if obr_time:
                try:
                    tube.obr_times.append(parse_hl7_time(obr_time, self.local_timezone))
                except ValueError:
                    errors.append(Hl7Error(AckCode.AE, "bad_time",
                                           f"OBR {group.obr_seq}: OBR-7 is not an HL7 timestamp",
                                           "OBR", group.obr_seq, 7, HL7_DATA_TYPE_ERROR))
            for seq, obx in group.observations:
                skipped += self._observation(tube, seq, obx, errors)

        records: list[tuple[str, AnalyserResults]] = []
        if not errors and not any(t.observations for t in tubes.values()):
            what = "preliminary or cancelled results only" if skipped else "no results (OBX)"
            errors.append(Hl7Error(AckCode.AE, "no_final_results",
                                   f"nothing to store: {what}", "OBX", None, 11,
                                   HL7_REQUIRED_FIELD_MISSING))
        if errors or analyser_id is None:
            return errors, []
        message_id = header.get(10) or None
        for tube in tubes.values():
            if not tube.observations:
                continue
            run_at = max(tube.times) if tube.times else (
                max(tube.obr_times) if tube.obr_times else message_time)
            if run_at is None:
                errors.append(Hl7Error(AckCode.AE, "missing_time",
                                       "no run time: OBX-14, OBR-7 and MSH-7 are all empty",
                                       "OBR", None, 7, HL7_REQUIRED_FIELD_MISSING))
                continue
            try:
                result = AnalyserResults(
                    barcode=tube.barcode,
                    analyser_id=analyser_id,
                    run_at=run_at,
                    observations=tuple(tube.observations),
                    message_id=message_id if message_id and _is_identifier(message_id)
                    else None,
                )
            except ValidationError:
                errors.append(Hl7Error(AckCode.AE, "too_many_results",
                                       "more than 100 results for one tube", "OBX", None, None,
                                       HL7_INTERNAL_ERROR))
                continue
            name = "|".join([analyser_id, header.get(7), header.get(10), tube.barcode])
            ce_id = (str(uuid.uuid5(_CE_ID_NAMESPACE, name)) if header.get(10)
                     else str(uuid.uuid4()))
            records.append((ce_id, result))
        return errors, records

    def _check_header(self, h: _Header) -> Hl7Error | None:
        if self.allowed_senders is not None:
            app, facility = h.component(3).strip(), h.component(4).strip()
            if not {app, f"{app}^{facility}"} & self.allowed_senders:
                return Hl7Error(AckCode.AR, "sender_not_allowed",
                                "the sending application and facility (MSH-3, MSH-4) are not "
                                "an analyser of this lab", "MSH", 1, 3,
                                HL7_TABLE_VALUE_NOT_FOUND)
        kind, trigger = h.component(9, 1), h.component(9, 2)
        if kind != "ORU":
            return Hl7Error(AckCode.AR, "unsupported_message_type",
                            "only ORU^R01 (observation results) is accepted here",
                            "MSH", 1, 9, HL7_UNSUPPORTED_MESSAGE_TYPE)
        if trigger != "R01":
            return Hl7Error(AckCode.AR, "unsupported_event",
                            "only ORU^R01 (observation results) is accepted here",
                            "MSH", 1, 9, HL7_UNSUPPORTED_EVENT)
        if h.component(11) not in self.processing_ids:
            return Hl7Error(AckCode.AR, "unsupported_processing_id",
                            "MSH-11 processing id not accepted (production is P)",
                            "MSH", 1, 11, HL7_UNSUPPORTED_PROCESSING_ID)
        if not _SUPPORTED_VERSIONS.match(h.component(12)):
            return Hl7Error(AckCode.AR, "unsupported_version",
                            "MSH-12 version not supported (2.3 to 2.9)",
                            "MSH", 1, 12, HL7_UNSUPPORTED_VERSION)
        if not h.get(10):
            return Hl7Error(AckCode.AR, "missing_message_id", "MSH-10 message control id "
                            "is empty", "MSH", 1, 10, HL7_REQUIRED_FIELD_MISSING)
        if h.component(7):
            # A run time of last resort, and part of the results' ce_id: read it
            # now, or it was taken as absent ("empty") without a word.
            try:
                parse_hl7_time(h.component(7), self.local_timezone)
            except ValueError:
                return Hl7Error(AckCode.AR, "bad_message_time",
                                "MSH-7 date/time of message is not an HL7 timestamp "
                                "(YYYYMMDDHHMM[SS[.S]][+/-ZZZZ])",
                                "MSH", 1, 7, HL7_DATA_TYPE_ERROR)
        return None

    def _analyser_id(self, msh: Any, errors: list[Hl7Error]) -> str | None:
        if self.analyser_id:
            return self.analyser_id
        app, facility = _field(msh, 3).strip(), _field(msh, 4).strip()
        for key in (f"{app}^{facility}", app):
            if key in self.analyser_ids:
                return self.analyser_ids[key]
        for candidate in (app, facility):
            if candidate and _is_identifier(candidate):
                return candidate
        errors.append(Hl7Error(AckCode.AE, "unknown_analyser",
                               "the sending analyser (MSH-3) is not known",
                               "MSH", 1, 3, HL7_TABLE_VALUE_NOT_FOUND))
        return None

    def _barcode(self, group: _Group, errors: list[Hl7Error]) -> str | None:
        for where in self.barcode_fields:
            if where == "OBR-3":
                value, seg, seq, no = _field(group.obr, 3), "OBR", group.obr_seq, 3
            elif where == "OBR-2":
                value, seg, seq, no = _field(group.obr, 2), "OBR", group.obr_seq, 2
            else:
                value, seg, seq, no = "", "SPM", None, 2
                for spm in group.specimens:
                    # SPM-2 is EIP: placer id (EI) ^ filler id (EI), EI in subcomponents.
                    value = _field(spm, 2, 2, 1) or _field(spm, 2, 1, 1)
                    if value:
                        break
            value = value.strip()
            if not value:
                continue
            if _BARCODE.match(value):
                return value
            errors.append(Hl7Error(AckCode.AE, "bad_barcode",
                                   f"OBR {group.obr_seq}: {where} is not a specimen barcode "
                                   "(4 to 32 letters, digits or '-')", seg, seq, no,
                                   HL7_DATA_TYPE_ERROR))
            return None
        errors.append(Hl7Error(AckCode.AE, "missing_barcode",
                               f"OBR {group.obr_seq}: no specimen barcode in "
                               + ", ".join(self.barcode_fields), "OBR", group.obr_seq, 3,
                               HL7_REQUIRED_FIELD_MISSING))
        return None

    def _observation(self, tube: _Tube, seq: int, obx: Any, errors: list[Hl7Error]) -> int:
        """Adds OBX `seq` to the tube or an error; returns 1 when skipped as not final."""

        def fail(reason: str, what: str, field_no: int | None, hl7_code: str) -> int:
            errors.append(Hl7Error(AckCode.AE, reason, f"OBX {seq}: {what}", "OBX", seq,
                                   field_no, hl7_code))
            return 0

        status = _field(obx, 11).strip().upper()
        if status in _NOT_FINAL:
            return 1
        if status not in _FINAL:
            return fail("bad_status", "OBX-11 result status is not an HL7 status", 11,
                        HL7_TABLE_VALUE_NOT_FOUND)

        identifier, system = _field(obx, 3, 1), _field(obx, 3, 3)
        if not identifier.strip():
            return fail("missing_code", "OBX-3 observation identifier is empty", 3,
                        HL7_REQUIRED_FIELD_MISSING)
        code = self.map_code(identifier, system)
        alternate = _field(obx, 3, 4)
        if code is None and alternate.strip():
            code = self.map_code(alternate, _field(obx, 3, 6))
        shown = identifier.strip()[:32] + (f" ({system.strip()[:16]})" if system.strip() else "")
        if code is None or code not in self.catalogue:
            return fail("unknown_code", f"unknown test code {shown}", 3,
                        HL7_TABLE_VALUE_NOT_FOUND)
        if code in tube.codes:
            return fail("duplicate_code", f"{code} already given by OBX {tube.codes[code]} "
                        "for the same tube", 3, HL7_INTERNAL_ERROR)
        entry = self.catalogue[code]
        try:
            value = self._value(obx, code, getattr(entry, "unit", None))
        except _ValueError as exc:
            return fail(exc.reason, exc.text, exc.field_no, exc.hl7_code)
        observed_at = _field(obx, 14)
        if observed_at:
            try:
                tube.times.append(parse_hl7_time(observed_at, self.local_timezone))
            except ValueError:
                return fail("bad_time", "OBX-14 is not an HL7 timestamp", 14,
                            HL7_DATA_TYPE_ERROR)
        tube.codes[code] = seq
        tube.observations.append(value)
        return 0

    def _value(self, obx: Any, code: str, unit: str | None) -> AnalyserObservation:
        value_type = _field(obx, 2).strip().upper()
        first = _field(obx, 5, 1)
        comparator: str | None = None
        if value_type == "SN":
            # SN: comparator ^ number ^ separator/suffix ^ number ("<^0.01", "^5.2").
            sign, number = first.strip(), _field(obx, 5, 2).strip()
            bare = _NUMERIC_TEXT.match(first) if not number else None
            if bare:  # sent without components: "0.01" or "<0.01"
                sign, number = bare.group(1) or "", bare.group(2)
            if _field(obx, 5, 3).strip() or _field(obx, 5, 4).strip():
                raise _ValueError("unsupported_value",
                                  "ratios and ranges (SN with a second number) are not taken",
                                  5, HL7_DATA_TYPE_ERROR)
            if sign not in _COMPARATORS:
                raise _ValueError("unsupported_value", "SN comparator not supported", 5,
                                  HL7_DATA_TYPE_ERROR)
            if not re.fullmatch(_NUMBER, number):
                raise _ValueError("bad_value", "SN value is not a number", 5,
                                  HL7_DATA_TYPE_ERROR)
            comparator, numeric = _COMPARATORS[sign], _number(number)
            coded = None
        elif value_type in ("NM", "ST", "TX", ""):
            match = _NUMERIC_TEXT.match(first)
            if match:
                comparator, numeric, coded = (_COMPARATORS[match.group(1) or ""],
                                              _number(match.group(2)), None)
            elif value_type == "NM":
                raise _ValueError("bad_value", "NM value is not a number", 5,
                                  HL7_DATA_TYPE_ERROR)
            else:
                numeric, coded = None, first.strip()
        elif value_type in ("CE", "CWE", "CNE", "IS"):
            numeric, coded = None, first.strip()
        else:
            raise _ValueError("unsupported_value", f"OBX-2 value type {value_type[:8]} is "
                              "not taken (NM, SN, ST, CE/CWE)", 2, HL7_DATA_TYPE_ERROR)

        if numeric is None:
            if not coded:
                raise _ValueError("missing_value", "OBX-5 value is empty", 5,
                                  HL7_REQUIRED_FIELD_MISSING)
            if not _CODED.match(coded):
                raise _ValueError("unsupported_value", "coded value is not a result code "
                                  "(letters, digits, + . _ -)", 5, HL7_DATA_TYPE_ERROR)
            return AnalyserObservation(code=code, coded_value=coded)

        sent_unit = self._sent_unit(obx)
        if unit is None:
            raise _ValueError("unit_mismatch", f"{code} has no numeric unit in the catalogue",
                              6, HL7_TABLE_VALUE_NOT_FOUND)
        if not sent_unit:
            raise _ValueError("missing_unit", f"OBX-6 unit is empty ({code} is in {unit})", 6,
                              HL7_REQUIRED_FIELD_MISSING)
        mapped = None
        for candidate in sent_unit:
            mapped = canonical_unit(candidate, unit)
            if mapped:
                break
        if mapped is None:
            raise _ValueError("unit_mismatch", f"unit {sent_unit[0][:16]} is not {unit} "
                              f"({code})", 6, HL7_TABLE_VALUE_NOT_FOUND)
        try:
            return AnalyserObservation(code=code, value=numeric, comparator=comparator,
                                       unit=mapped)
        except ValidationError:
            raise _ValueError("bad_value", "value out of range (at most 12 digits before "
                              "and 6 after the point)", 5, HL7_DATA_TYPE_ERROR) from None

    @staticmethod
    def _sent_unit(obx: Any) -> list[str]:
        """OBX-6 readings to try: the whole field (an unescaped "10^9/L" splits into
        components), its identifier, its text."""
        whole = str(obx(6)).strip() if len(obx) > 6 else ""
        readings = [whole, _field(obx, 6, 1), _field(obx, 6, 2)]
        return [r.strip() for r in dict.fromkeys(readings) if r and r.strip()]


_BARCODE = re.compile(r"^[A-Za-z0-9-]{4,32}$")
_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


def _is_identifier(text: str) -> bool:
    return bool(_IDENTIFIER.match(text))


def _time_or_none(text: str, local: timezone) -> datetime | None:
    try:
        return parse_hl7_time(text, local) if text else None
    except ValueError:
        return None


def _field(segment: Any, field_no: int, component: int = 1, sub: int = 1) -> str:
    """A (first repetition's) value, unescaped; "" when absent or the HL7 null ("")."""
    try:
        value = segment.extract_field(1, field_no, 1, component, sub)
    except (IndexError, TypeError):
        return ""
    value = str(value)
    return "" if value == '""' else value


def _groups(message: Any) -> tuple[list[_Group], Hl7Error | None]:
    """OBR groups in order; OBX after an SPM describe the specimen and are left out."""
    groups: list[_Group] = []
    current: _Group | None = None
    in_specimen = False
    counts: dict[str, int] = {}
    for segment in message:
        name = str(segment[0][0])
        counts[name] = counts.get(name, 0) + 1
        if name == "OBR":
            current = _Group(segment, counts[name])
            groups.append(current)
            in_specimen = False
        elif name in ("PID", "ORC"):
            current, in_specimen = None, False
        elif name == "SPM":
            if current is not None:
                current.specimens.append(segment)
                in_specimen = True
        elif name == "OBX":
            if current is None:
                return [], Hl7Error(AckCode.AR, "malformed_message",
                                    f"OBX {counts[name]} comes before any OBR",
                                    "OBX", counts[name], None, HL7_SEGMENT_SEQUENCE)
            if not in_specimen:
                current.observations.append((counts[name], segment))
    if not groups:
        return [], Hl7Error(AckCode.AR, "malformed_message", "ORU^R01 without an OBR segment",
                            "OBR", None, None, HL7_SEGMENT_SEQUENCE)
    return groups, None

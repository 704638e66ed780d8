"""Types shared by every contract, and `IntakeRejected` (DESIGN §4, §6).

Codes are enums or validated patterns; no free text. Money is Decimal with two
places, serialised as a string; times are timezone-aware UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from .base import Part, StrictModel
from .patient_ref import PATIENT_REF_PATTERN

# --- identifiers and codes -------------------------------------------------

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
# "<admin code>-<kind letter><number>", e.g. 652325-H01 (see refdata/changji.yaml).
INSTITUTION_ID_PATTERN = r"^[1-9][0-9]{5}-[A-Z][0-9]{2,4}$"
CODE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
SERVICE_PATTERN = r"^[a-z][a-z0-9]{1,31}$"

Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
"""An opaque id (order, visit, staff member, device…): never a name."""

InstitutionId = Annotated[str, StringConstraints(pattern=INSTITUTION_ID_PATTERN)]
PatientRef = Annotated[str, StringConstraints(pattern=PATIENT_REF_PATTERN)]
Code = Annotated[str, StringConstraints(pattern=CODE_PATTERN)]


class Sex(StrEnum):
    male = "male"
    female = "female"
    unknown = "unknown"


class AgeUnit(StrEnum):
    years = "years"
    days = "days"


class Age(Part):
    """Age at the event: years, or days under one year (never the birth date)."""

    # DESIGN §4: "years; days under one year". 150 years is an assumed ceiling
    # (no source; the oldest verified human age is under 123).
    value: int = Field(ge=0, le=365)
    unit: AgeUnit

    @model_validator(mode="after")
    def _days_only_under_one_year(self) -> Age:
        if self.unit is AgeUnit.years and not 1 <= self.value <= 150:
            raise ValueError("age in years is 1..150; under one year it is given in days")
        return self


# --- times -----------------------------------------------------------------


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-01:00 is after datetime.max in UTC
        raise ValueError("time out of range") from None


UtcDateTime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""Timezone-aware, stored in UTC; naive datetimes are refused."""


# --- decimals --------------------------------------------------------------


def _decimal_in(value: Any) -> Any:
    if isinstance(value, bool | float):
        raise ValueError("decimal values are strings or Decimal, never float")
    if isinstance(value, str):
        try:
            parsed = Decimal(value)
        except InvalidOperation:
            raise ValueError("not a decimal number") from None
        if not parsed.is_finite():
            raise ValueError("not a finite number")
        return parsed
    return value


MONEY_PATTERN = r"^(0|[1-9][0-9]{0,9})(\.[0-9]{1,2})?$"


def _two_places(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"))


Money = Annotated[
    Decimal,
    BeforeValidator(_decimal_in),
    Field(ge=0, max_digits=12, decimal_places=2),
    AfterValidator(_two_places),
    PlainSerializer(lambda d: f"{d:.2f}", return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": MONEY_PATTERN}),
]
"""Yuan, non-negative, two decimal places; a string on the wire ("12.50")."""

QUANTITY_PATTERN = r"^-?(0|[1-9][0-9]{0,11})(\.[0-9]{1,6})?$"


def _quantity_out(value: Decimal) -> str:
    text = format(value, "f")
    return "0" if text in ("-0", "") else text


Quantity = Annotated[
    Decimal,
    BeforeValidator(_decimal_in),
    Field(max_digits=18, decimal_places=6),
    PlainSerializer(_quantity_out, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": QUANTITY_PATTERN}),
]
"""A measured value, kept as written ("4.50" stays "4.50"); a string on the wire."""


# --- IntakeRejected --------------------------------------------------------

# Reasons the platform answers with IntakeRejected (DESIGN §6), to a sender whose
# signature verified; services add domain codes of the same shape.
PLATFORM_REJECTION_REASONS = frozenset({
    "malformed_json", "schema_violation", "unknown_type", "missing_header", "bad_header",
    "duplicate_header", "unsupported_specversion", "bad_content_type", "key_mismatch",
    "oversized", "replayed_nonce", "forbidden_institution", "duplicate_id_conflict",
    "processing_error",
})
# Why a record's sender is not verified: never answered (the answer would go to
# whoever the record claims to be), kept for ops (kit/consumer.py).
UNVERIFIED_REASONS = frozenset({
    "missing_signature", "bad_signature", "unknown_terminal", "source_mismatch",
    "stale_timestamp",
})

FIELD_PATH_PATTERN = r"^[A-Za-z0-9_.*-]{0,200}$"
TYPE_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
SOURCE_PATTERN = r"^[A-Za-z0-9._~:/@+=-]{1,256}$"


class FieldError(Part):
    """One refused field: its path ("tests.0.code") and an error code ("enum")."""

    field: Annotated[str, StringConstraints(pattern=FIELD_PATH_PATTERN)]
    code: Code


class IntakeRejected(StrictModel):
    """An intake record the service refused, keyed so its sender finds it.

    Names fields and codes, never values (DESIGN §6)."""

    CE_TYPE: ClassVar[str] = "yigongti.intake.rejected.v1"
    KEY_FIELD: ClassVar[str] = "key"

    key: Identifier = Field(description="The refused record's Kafka key, else its ce_id.")
    service: Annotated[str, StringConstraints(pattern=SERVICE_PATTERN)]
    rejected_id: Identifier | None = Field(
        default=None, description="ce_id of the refused record, if it had a usable one."
    )
    rejected_type: Annotated[str, StringConstraints(pattern=TYPE_PATTERN)] | None = Field(
        default=None, description="ce_type of the refused record."
    )
    sender: Annotated[str, StringConstraints(pattern=SOURCE_PATTERN)] | None = Field(
        default=None, description="ce_source of the refused record."
    )
    reason: Code
    fields: tuple[FieldError, ...] = Field(default=(), max_length=50)
    rejected_at: UtcDateTime


_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")  # x-nonce, content-type


def safe_field(path: str) -> str:
    """A field path fit to be named in an answer or a log: each dotted part an
    index or an identifier, anything else (a key or header name a sender chose
    could hold anything) replaced by "*"."""
    parts = ["*" if not (p.isdigit() or _SAFE_NAME.match(p)) else p for p in path.split(".")]
    return ".".join(parts)[:200] or "*"


def safe_fields(fields) -> tuple[FieldError, ...]:
    """(path, code) pairs as FieldErrors fit for IntakeRejected: paths made safe,
    codes checked, at most the model's 50 (a longer list is cut, never refused)."""
    out = []
    for path, code in list(fields)[:50]:
        out.append(FieldError(field=safe_field(str(path)) if path else "",
                              code=code if re.fullmatch(CODE_PATTERN, str(code)) else "invalid"))
    return tuple(out)


def field_errors(error: ValidationError, limit: int = 50) -> tuple[FieldError, ...]:
    """Field paths and error codes of a pydantic ValidationError, no values.

    A path part that does not look like an identifier (an unknown key sent by
    the client could hold anything) is replaced by "*"."""
    out: list[FieldError] = []
    for item in error.errors(include_input=False, include_url=False)[:limit]:
        parts = [
            str(p) if isinstance(p, int) or _SAFE_NAME.match(str(p)) else "*" for p in item["loc"]
        ]
        code = item["type"] if re.fullmatch(CODE_PATTERN, item["type"]) else "invalid"
        out.append(FieldError(field=".".join(parts)[:200], code=code))
    return tuple(out)


CONTRACTS: tuple[type[StrictModel], ...] = (IntakeRejected,)
FROZEN = True

"""The read-back rule of an acknowledgement (critical value or finding).

Confirmed only when what the nurse typed matches what was sent: the value
(numbers compared as numbers, so "6.90" reads back "6.9"; a comparator such
as ">" must be read back too) and the unit (exactly, spaces aside: "mmol/L"
and "mol/L" are a thousand times apart, and case carries meaning in units).
A coded value (e.g. "POS") is compared as its code, case aside.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_NUMBER = re.compile(r"^\s*(<=|>=|<|>)?\s*([+-]?\d+(?:\.\d+)?)\s*$")


def _number(text: str) -> tuple[str, Decimal] | None:
    match = _NUMBER.match(text or "")
    if not match:
        return None
    try:
        return match.group(1) or "", Decimal(match.group(2))
    except InvalidOperation:
        return None


def matches(*, sent_value: str | None, sent_unit: str | None, typed_value: str,
            typed_unit: str, sent_comparator: str | None = None,
            sent_code: str | None = None) -> bool:
    if sent_code is not None:
        return typed_value.strip().lower() == sent_code.strip().lower()
    if sent_value is None:
        return False
    sent = _number(f"{sent_comparator or ''}{sent_value}")
    typed = _number(typed_value)
    if sent is None or typed is None or sent != typed:
        return False
    return "".join((typed_unit or "").split()) == "".join((sent_unit or "").split())

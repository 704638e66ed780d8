"""Pseudonymous patient reference: a keyed HMAC of the normalised national ID.

The resident identity number (居民身份号码) follows GB 11643-1999: 17 digits
(6 address code, 8 birth date, 3 sequence) and a check character computed by
ISO 7064 MOD 11-2, "X" standing for 10. First-generation 15-digit numbers have
a 2-digit birth year and no check character; they convert to 18 by inserting
"19" before the year and computing the check character.

Errors carry a code and never echo the number.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from datetime import date

PATIENT_REF_PATTERN = r"^v[0-9]{1,3}:[0-9a-f]{64}$"
KEY_VERSION_PATTERN = r"^v[0-9]{1,3}$"
# RFC 2104 §3: a key shorter than the hash output weakens the HMAC.
MIN_KEY_BYTES = 32

# GB 11643-1999 §6.2: weight of position i (1-based, left to right) is 2^(18-i) mod 11.
_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
# Check character for (sum of weighted digits) mod 11 = 0..10.
_CHECK = "10X98765432"

_ID18 = re.compile(r"^[0-9]{17}[0-9X]$")
_ID15 = re.compile(r"^[0-9]{15}$")


class NationalIdError(ValueError):
    """An invalid national ID; `code` says why, the message never holds the ID."""

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(f"invalid national id: {code}")


def check_character(first17: str) -> str:
    """The GB 11643-1999 check character of the first 17 digits."""
    if not re.fullmatch(r"[0-9]{17}", first17):
        raise NationalIdError("format")
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def normalise_national_id(national_id: str) -> str:
    """The canonical 18-character form: full-width characters folded, surrounding
    space stripped, "x" upper-cased, 15 digits converted; checksum verified."""
    if not isinstance(national_id, str):
        raise NationalIdError("type")
    text = unicodedata.normalize("NFKC", national_id).strip().upper()
    if not text:
        raise NationalIdError("empty")
    if _ID15.match(text):
        body = text[:6] + "19" + text[6:]
        _check_birth_date(body)
        return body + check_character(body)
    if len(text) != 18:
        raise NationalIdError("length")
    if not _ID18.match(text):
        raise NationalIdError("characters")
    _check_birth_date(text)
    if check_character(text[:17]) != text[17]:
        raise NationalIdError("checksum")
    return text


def is_valid_national_id(national_id: str) -> bool:
    try:
        normalise_national_id(national_id)
    except NationalIdError:
        return False
    return True


def patient_ref(national_id: str, key: bytes, key_version: str = "v1") -> str:
    """`<key_version>:<hex HMAC-SHA256 of the normalised ID>`."""
    if not re.fullmatch(KEY_VERSION_PATTERN, key_version):
        raise ValueError("key_version must look like 'v1'")
    if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
        raise ValueError(f"key must be at least {MIN_KEY_BYTES} bytes")
    normalised = normalise_national_id(national_id)
    digest = hmac.new(key, normalised.encode("ascii"), hashlib.sha256).hexdigest()
    return f"{key_version}:{digest}"


def _check_birth_date(body: str) -> None:
    if body[:1] == "0":  # address codes start with a province code 11..82
        raise NationalIdError("address_code")
    try:
        born = date(int(body[6:10]), int(body[10:12]), int(body[12:14]))
    except ValueError:
        raise NationalIdError("birth_date") from None
    if born.year < 1800:
        raise NationalIdError("birth_date")

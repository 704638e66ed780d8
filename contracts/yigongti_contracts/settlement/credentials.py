"""The signed credentials a counter hands to settlement over HTTPS (never on
Kafka): a face authentication result of the national face platform
(`authNo`), or an electronic insurance voucher (医保电子凭证, a QR payload).

Signing rule: the issuer signs, with Ed25519, the payload's canonical JSON
(keys sorted, no spaces, UTF-8). The credential is

    {"payload": {...}, "signature": "<base64url of the 64-byte signature>"}

A face payload: kind "face_auth", issuer, auth_no, ec_index_no (the
platform's opaque index of the person, never the ID), terminal_id,
issued_at (RFC 3339 UTC), matched, similarity, liveness, liveness_passed.
A voucher payload: kind "qr_voucher", issuer, voucher_no, ec_index_no,
issued_at. Fresh means issued at most 60 s before it is checked.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

MAX_AGE = timedelta(seconds=60)  # DESIGN §5: stale after 60 s
MAX_AHEAD = timedelta(seconds=5)  # clock skew allowed into the future (assumed)


def canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def sign(payload: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    signature = base64.urlsafe_b64encode(key.sign(canonical(payload))).rstrip(b"=").decode()
    return {"payload": payload, "signature": signature}


def verify(credential: dict[str, Any], key: Ed25519PublicKey) -> bool:
    try:
        text = credential["signature"]
        signature = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        key.verify(signature, canonical(credential["payload"]))
        return True
    except (InvalidSignature, KeyError, TypeError, ValueError):
        return False


def issued_at(payload: dict[str, Any]) -> datetime:
    at = datetime.fromisoformat(str(payload["issued_at"]).replace("Z", "+00:00"))
    if at.tzinfo is None:
        raise ValueError("issued_at must carry its offset")
    return at.astimezone(UTC)


def fresh(payload: dict[str, Any], now: datetime) -> bool:
    try:
        at = issued_at(payload)
    except (KeyError, ValueError):
        return False
    return now - MAX_AGE <= at <= now + MAX_AHEAD

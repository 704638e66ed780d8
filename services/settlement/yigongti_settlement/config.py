"""The settlement service's own settings (beside the kit's), from the environment,
and the keys they point at. `current()` is what the handlers read; tests set it
with `configure()`."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from yigongti_contracts.patient_ref import KEY_VERSION_PATTERN, MIN_KEY_BYTES


class SettlementSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    patient_ref_keys_file: str = Field(
        "", description="PATIENT_REF_KEYS_FILE: YAML {current: v1, keys: {v1: <64 hex>}}: the "
                        "patient_ref HMAC keys by version (settlement alone holds them).")
    national_id_key_file: str = Field(
        "", description="NATIONAL_ID_KEY_FILE: 64 hex characters, the AES-256 key that "
                        "encrypts national IDs at rest (and derives settlement tokens).")
    face_issuer_keys_file: str = Field(
        "", description="FACE_ISSUER_KEYS_FILE: YAML {issuers: [{id, public_key (PEM)}]}: the "
                        "face platform's and voucher issuers' signing keys.")
    lookup_limit_per_minute: int = Field(
        30, gt=0, description="LOOKUP_LIMIT_PER_MINUTE: ID look-ups a terminal may make a "
                              "minute (assumed: a busy counter serves one patient a minute).")


@dataclass(frozen=True)
class Keys:
    ref_keys: dict[str, bytes]  # version -> key
    current_version: str
    id_key: bytes
    issuers: dict[str, Ed25519PublicKey]


def load_keys(settings: SettlementSettings) -> Keys:
    if not (settings.patient_ref_keys_file and settings.national_id_key_file):
        raise RuntimeError("PATIENT_REF_KEYS_FILE and NATIONAL_ID_KEY_FILE are required")
    raw = yaml.safe_load(Path(settings.patient_ref_keys_file).read_text("utf-8"))
    ref_keys = {str(v): bytes.fromhex(str(k)) for v, k in raw["keys"].items()}
    import re
    for version, key in ref_keys.items():
        if not re.fullmatch(KEY_VERSION_PATTERN, version) or len(key) < MIN_KEY_BYTES:
            raise RuntimeError(f"patient_ref key {version}: bad version or shorter than "
                               f"{MIN_KEY_BYTES} bytes")
    current = str(raw["current"])
    if current not in ref_keys:
        raise RuntimeError("the current patient_ref key version has no key")
    id_key = bytes.fromhex(Path(settings.national_id_key_file).read_text("utf-8").strip())
    if len(id_key) != 32:
        raise RuntimeError("NATIONAL_ID_KEY_FILE must hold 32 bytes (64 hex characters)")
    issuers: dict[str, Ed25519PublicKey] = {}
    if settings.face_issuer_keys_file:
        data = yaml.safe_load(Path(settings.face_issuer_keys_file).read_text("utf-8")) or {}
        for issuer in data.get("issuers") or []:
            key = load_pem_public_key(issuer["public_key"].encode())
            if not isinstance(key, Ed25519PublicKey):
                raise RuntimeError(f"issuer {issuer['id']}: not an Ed25519 key")
            issuers[str(issuer["id"])] = key
    return Keys(ref_keys, current, id_key, issuers)


_configured: list[tuple[SettlementSettings, Keys]] = []


def configure(settings: SettlementSettings) -> Keys:
    keys = load_keys(settings)
    _configured[:] = [(settings, keys)]
    return keys


def current() -> tuple[SettlementSettings, Keys]:
    if not _configured:
        configure(_from_env())
    return _configured[0]


@cache
def _from_env() -> SettlementSettings:
    return SettlementSettings()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

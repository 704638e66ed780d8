"""The kit does what the published intake contract says (contracts/terminal/):
its signer reproduces the signing vectors byte for byte, its verifier accepts
them, and its nonce, terminal id, freshness and default limits are the ones
written in intake-contract.json."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path

import pytest
from yigongti_contracts.common import PLATFORM_REJECTION_REASONS, UNVERIFIED_REASONS
from yigongti_contracts.envelope import parse_time
from yigongti_kit import intake_auth
from yigongti_kit.intake_auth import (
    TerminalSigner,
    sign_intake,
    signing_input,
    verify_intake,
    verify_record,
)
from yigongti_kit.settings import KitSettings

TERMINAL = Path(__file__).resolve().parents[3] / "contracts" / "terminal"
VECTORS = json.loads((TERMINAL / "signing-vectors.json").read_text("utf-8"))
CONTRACT = json.loads((TERMINAL / "intake-contract.json").read_text("utf-8"))
KEY = VECTORS["test_key"]
CASES = VECTORS["cases"]


def _input(case):
    i = case["input"]
    return dict(ce_type=i["ce_type"], ce_id=i["ce_id"], ce_source=i["ce_source"],
                ce_time_header=i["ce_time"], nonce=i["x-nonce"],
                terminal_id=i["x-terminal-id"], value=base64.b64decode(i["value_base64"]))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_the_kits_signing_input_is_the_published_bytes(case) -> None:
    expected = base64.b64decode(case["expected"]["signing_input_base64"])
    assert signing_input(**_input(case)) == expected
    assert expected.hex() == case["expected"]["signing_input_hex"]
    assert expected.decode() == case["expected"]["signing_input_utf8"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
@pytest.mark.parametrize("key_form", ["private_seed_base64", "private_key_pem"])
def test_the_kits_signer_gives_the_published_signature(case, key_form) -> None:
    args = _input(case)
    headers = sign_intake(KEY[key_form], **{k: v for k, v in args.items() if k != "nonce"},
                          nonce=args["nonce"])
    assert headers == {"x-terminal-id": case["input"]["x-terminal-id"],
                       "x-nonce": case["input"]["x-nonce"],
                       "x-signature": case["expected"]["x-signature"]}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_a_terminal_signer_over_the_records_headers_gives_it_too(case) -> None:
    i = case["input"]
    signer = TerminalSigner(i["x-terminal-id"], KEY["private_key_pem"])
    envelope = [("ce_specversion", b"1.0"), ("ce_id", i["ce_id"].encode()),
                ("ce_source", i["ce_source"].encode()), ("ce_type", i["ce_type"].encode()),
                ("ce_time", i["ce_time"].encode()), ("content-type", b"application/json")]
    signed = dict(signer.sign(envelope, base64.b64decode(i["value_base64"]),
                              nonce=i["x-nonce"]))
    assert signed["x-signature"].decode() == case["expected"]["x-signature"]
    assert signer.public_key_b64 == KEY["public_key_base64"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_the_kits_verifier_accepts_each_vector_and_refuses_a_changed_byte(case) -> None:
    i = case["input"]
    value = base64.b64decode(i["value_base64"])
    headers = [("ce_type", i["ce_type"].encode()), ("ce_id", i["ce_id"].encode()),
               ("ce_source", i["ce_source"].encode()), ("ce_time", i["ce_time"].encode()),
               ("x-terminal-id", i["x-terminal-id"].encode()),
               ("x-nonce", i["x-nonce"].encode()),
               ("x-signature", case["expected"]["x-signature"].encode())]
    at = parse_time(i["ce_time"])
    for key in (KEY["public_key_base64"], KEY["public_key_pem"]):
        assert verify_record(headers, value, key, received_at=at, max_skew_s=300) is None
    assert verify_record(headers, value + b" ", KEY["public_key_base64"], received_at=at,
                         max_skew_s=300) == "bad_signature"


def test_header_names_terminal_id_and_fields_are_the_kits() -> None:
    signing = CONTRACT["signing"]
    assert set(signing["headers"]) == set(intake_auth.SIGNATURE_HEADERS)
    assert signing["input_fields"][:4] == list(intake_auth._SIGNED_CE_HEADERS)
    assert signing["separator"] == "\n"
    assert intake_auth._TERMINAL_ID.pattern == CONTRACT["limits"]["terminal_id"]
    assert intake_auth.terminal_source("T-1") == "/terminals/T-1"


def _verify_nonce(nonce: str) -> str | None:
    case = CASES[0]
    args = _input(case)
    args["nonce"] = nonce
    headers = sign_intake(KEY["private_seed_base64"],
                          **{k: v for k, v in args.items() if k != "nonce"}, nonce=nonce)
    return verify_intake(signature_headers=headers, public_key=KEY["public_key_base64"],
                         received_at=parse_time(args["ce_time_header"]), max_skew_s=300,
                         **{k: v for k, v in args.items() if k not in ("nonce", "terminal_id")})


@pytest.mark.parametrize(("nonce", "ok"), [
    ("ab" * 16, True),   # 32 hex characters: 16 bytes, the least
    ("ab" * 64, True),   # 128, the most
    ("AB" * 16, True),   # upper case is taken (compared as sent)
    ("ab" * 15, False),  # 30
    ("a" * 33, False),   # odd
    ("ab" * 65, False),  # 130
    ("zz" * 16, False),  # not hex
])
def test_the_nonce_rule_is_the_kits(nonce, ok) -> None:
    low, high = CONTRACT["limits"]["nonce_hex_chars"]
    assert (low, high) == (32, 128) and CONTRACT["nonce"]["random_bytes_min"] == 16
    assert (_verify_nonce(nonce) is None) == ok


def test_freshness_is_the_written_window() -> None:
    case = CASES[0]
    args = _input(case)
    headers = sign_intake(KEY["private_seed_base64"],
                          **{k: v for k, v in args.items() if k != "nonce"},
                          nonce=args["nonce"])
    signed_at = parse_time(args["ce_time_header"])
    skew = CONTRACT["freshness"]["max_skew_s"]

    def verdict(received_at, allowance=0.0):
        return verify_intake(signature_headers=headers, public_key=KEY["public_key_base64"],
                             received_at=received_at, max_skew_s=skew, allowance_s=allowance,
                             **{k: v for k, v in args.items()
                                if k not in ("nonce", "terminal_id")})

    assert verdict(signed_at + timedelta(seconds=skew)) is None
    assert verdict(signed_at - timedelta(seconds=skew)) is None
    assert verdict(signed_at + timedelta(seconds=skew + 1)) == "stale_timestamp"
    assert verdict(signed_at - timedelta(seconds=skew + 1)) == "stale_timestamp"
    # held up: as much again allowed for a record read late
    assert verdict(signed_at + timedelta(seconds=skew + 60), allowance=60) is None


def test_the_default_limits_are_the_kits() -> None:
    fields = KitSettings.model_fields
    assert CONTRACT["freshness"]["max_skew_s"] == fields["intake_max_skew_s"].default
    assert CONTRACT["limits"]["record_value_max_bytes"] == fields["max_record_bytes"].default


def test_reason_codes_are_the_platforms() -> None:
    codes = CONTRACT["reason_codes"]
    assert set(codes["platform"]) == PLATFORM_REJECTION_REASONS
    assert set(codes["unverified_never_answered"]) == UNVERIFIED_REASONS
    kit_codes = {intake_auth.MISSING_SIGNATURE, intake_auth.SOURCE_MISMATCH,
                 intake_auth.UNKNOWN_TERMINAL, intake_auth.BAD_SIGNATURE,
                 intake_auth.STALE_TIMESTAMP}
    assert kit_codes == UNVERIFIED_REASONS
    assert intake_auth.REPLAYED_NONCE in PLATFORM_REJECTION_REASONS

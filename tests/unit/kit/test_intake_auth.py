import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from yigongti_contracts.envelope import Envelope, to_headers
from yigongti_kit.intake_auth import (
    TerminalSigner,
    load_public_key,
    parse_terminals,
    sign_intake,
    terminal_id_of,
    verify_intake,
    verify_record,
)

NOW = datetime(2025, 3, 1, 8, 0, 0, tzinfo=UTC)
CE_TIME = "2025-03-01T08:00:00.250000Z"
VALUE = b'{"order_id":"O-1","tests":[{"code":"GLU"}]}'
SKEW = 300

signer = TerminalSigner.generate("T-001")
stranger = TerminalSigner.generate("T-001")  # same id, another key


def envelope_headers(source="/terminals/T-001", ce_time=CE_TIME):
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"0b8f5f5e-2f3c-4a8e-9f77-5d1a0c3e9b11"),
        ("ce_source", source.encode()),
        ("ce_type", b"yigongti.lab.order.placed.v1"),
        ("ce_time", ce_time.encode()),
        ("content-type", b"application/json"),
    ]


def check(headers, value=VALUE, key=signer.public_key_b64, received_at=NOW):
    return verify_record(headers, value, key, received_at=received_at, max_skew_s=SKEW)


def test_valid_record_passes():
    assert check(signer.sign(envelope_headers(), VALUE)) is None


def test_signature_headers_are_the_agreed_ones():
    headers = dict(signer.sign(envelope_headers(), VALUE))
    assert headers["x-terminal-id"] == b"T-001"
    assert len(bytes.fromhex(headers["x-nonce"].decode())) >= 16
    assert len(base64.b64decode(headers["x-signature"])) == 64


def test_each_signing_uses_a_fresh_nonce():
    first = dict(signer.sign(envelope_headers(), VALUE))["x-nonce"]
    second = dict(signer.sign(envelope_headers(), VALUE))["x-nonce"]
    assert first != second


def test_forged_signature_is_refused():
    forged = stranger.sign(envelope_headers(), VALUE)
    assert check(forged) == "bad_signature"


def test_tampered_body_is_refused():
    headers = signer.sign(envelope_headers(), VALUE)
    assert check(headers, value=VALUE.replace(b"GLU", b"HBA")) == "bad_signature"


@pytest.mark.parametrize(
    "name, new",
    [
        ("ce_type", b"yigongti.lab.specimen.collected.v1"),
        ("ce_id", b"another-id"),
        ("ce_time", b"2025-03-01T08:00:01Z"),
        ("x-nonce", b"00" * 16),
    ],
)
def test_tampered_signed_header_is_refused(name, new):
    headers = [(k, new if k == name else v) for k, v in signer.sign(envelope_headers(), VALUE)]
    assert check(headers) == "bad_signature"


def test_repeated_signed_header_is_refused():
    headers = signer.sign(envelope_headers(), VALUE) + [("ce_type", b"yigongti.other.v1")]
    assert check(headers) == "bad_signature"


@pytest.mark.parametrize("offset", [timedelta(seconds=SKEW + 1), -timedelta(seconds=SKEW + 1)])
def test_stale_or_future_timestamp_is_refused(offset):
    headers = signer.sign(envelope_headers(), VALUE)
    assert check(headers, received_at=NOW + offset) == "stale_timestamp"


def test_timestamp_within_skew_passes_and_kafka_milliseconds_are_accepted():
    headers = signer.sign(envelope_headers(), VALUE)
    received_ms = int((NOW + timedelta(seconds=SKEW - 1)).timestamp() * 1000)
    assert check(headers, received_at=received_ms) is None


def test_unreadable_time_is_stale():
    headers = signer.sign(envelope_headers(ce_time="yesterday"), VALUE)
    assert check(headers) == "stale_timestamp"


def test_unknown_terminal_is_refused():
    assert check(signer.sign(envelope_headers(), VALUE), key=None) == "unknown_terminal"


def test_source_must_be_the_terminal():
    headers = signer.sign(envelope_headers(source="/terminals/T-002"), VALUE)
    assert check(headers) == "source_mismatch"


@pytest.mark.parametrize("missing", ["x-terminal-id", "x-nonce", "x-signature"])
def test_missing_signature_header_is_refused(missing):
    headers = [(k, v) for k, v in signer.sign(envelope_headers(), VALUE) if k != missing]
    assert check(headers) == "missing_signature"


def test_unsigned_record_is_missing_its_signature():
    assert check(envelope_headers()) == "missing_signature"


@pytest.mark.parametrize("nonce", ["abc", "zz" * 16, "00" * 200])
def test_malformed_nonce_is_refused(nonce):
    headers = signer.sign(envelope_headers(), VALUE, nonce=nonce)
    assert check(headers) == "bad_signature"


def test_garbled_signature_is_refused():
    headers = [
        (k, b"!!notbase64" if k == "x-signature" else v)
        for k, v in signer.sign(envelope_headers(), VALUE)
    ]
    assert check(headers) == "bad_signature"


def test_verify_intake_on_decoded_fields():
    private = Ed25519PrivateKey.generate()
    signed = sign_intake(
        private,
        terminal_id="T-9",
        ce_type="t",
        ce_id="i",
        ce_source="/terminals/T-9",
        ce_time_header=CE_TIME,
        value=b"{}",
    )
    common = dict(
        ce_type="t",
        ce_id="i",
        ce_source="/terminals/T-9",
        ce_time_header=CE_TIME,
        value=b"{}",
        received_at=NOW,
        max_skew_s=SKEW,
    )
    assert (
        verify_intake(signature_headers=signed, public_key=private.public_key(), **common) is None
    )
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    assert verify_intake(signature_headers=signed, public_key=pem, **common) is None


def test_public_keys_load_from_raw_base64_or_pem():
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    assert load_public_key(base64.b64encode(raw).decode()).public_bytes_raw() == raw
    assert load_public_key(pem).public_bytes_raw() == raw
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(ValueError):
            load_public_key(bad)


def test_signing_replaces_old_signature_headers():
    once = signer.sign(envelope_headers(), VALUE)
    twice = signer.sign(once, VALUE)
    assert [k for k, _ in twice].count("x-signature") == 1
    assert check(twice) is None


def test_terminal_id_of_headers():
    assert terminal_id_of(signer.sign(envelope_headers(), VALUE)) == "T-001"
    assert terminal_id_of(envelope_headers()) is None


def test_terminals_file_is_parsed_and_checked():
    text = f"""
- terminal_id: T-001
  institution_id: CJ-VC-001
  public_key: {signer.public_key_b64}
- terminal_id: T-002
  institution_id: CJ-VC-002
  public_key: {stranger.public_key_b64}
  active: false
"""
    terminals = parse_terminals(text)
    assert [(t.terminal_id, t.institution_id, t.active) for t in terminals] == [
        ("T-001", "CJ-VC-001", True),
        ("T-002", "CJ-VC-002", False),
    ]
    assert parse_terminals("terminals: []") == []
    with pytest.raises(ValueError, match="T-003"):
        parse_terminals("- {terminal_id: T-003, institution_id: X, public_key: bad}")
    with pytest.raises(ValueError, match="institution_id"):
        parse_terminals(f"- {{terminal_id: T-4, public_key: {signer.public_key_b64}}}")


@pytest.mark.parametrize("nonce", [" 00" * 16, "0x" + "ab" * 15, "ab" * 15 + "a b"])
def test_a_nonce_is_hex_digits_only(nonce):
    """bytes.fromhex skips spaces: the nonce rule is hex digits, nothing else."""
    signer = TerminalSigner.generate("T-1")
    env = Envelope(id="e1", source=signer.source, type="t.v1", time=datetime.now(UTC))
    headers = signer.sign(to_headers(env), b"{}", nonce=nonce)
    assert verify_record(headers, b"{}", signer.public_key_b64, received_at=datetime.now(UTC),
                         max_skew_s=60) == "bad_signature"

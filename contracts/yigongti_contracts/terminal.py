"""The contract a terminal vendor builds from, as files a team that reads no
Python can follow (contracts/terminal/, beside README.md):

- `intake-contract.json`: the signing input, the nonce and freshness rules,
  the Kafka key and partitioner, the reason codes of IntakeRejected (which are
  answered, which never are), the limits the services enforce, how a terminal
  gets a patient_ref, and per service its topics, schemas, who may send what,
  and what each published example is answered with;
- `lab-catalogue.json`: the test codes a clinic may order, from the lab's
  catalogue (services/lab/yigongti_lab/policy/catalogue.yaml);
- `signing-vectors.json`: a published TEST key, and for each case the exact
  signing-input bytes and the expected signature.

    python -m yigongti_contracts.terminal          # write the three files
    python -m yigongti_contracts.terminal --check  # exit 1 if a file differs

The rules here are the contract; the kit implements them (kit/intake_auth.py,
kit/consumer.py, envelope.py, strict.py): tests/unit/contracts/
test_terminal_contract.py checks the kit against this file and the vectors
against the kit's own signer. The TEST key was generated once and is kept in
signing-vectors.json; regenerating keeps it. Needs `cryptography` (the kit's
dependency) to write the vectors.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from . import envelope as ce
from .base import StrictModel
from .common import (
    ID_PATTERN,
    PLATFORM_REJECTION_REASONS,
    UNVERIFIED_REASONS,
)
from .examples import EXAMPLE_OUTCOMES, EXAMPLE_SENDERS, EXAMPLES
from .patient_ref import PATIENT_REF_PATTERN
from .registry import INTAKE_BY_SERVICE, REJECTION_REASONS_BY_SERVICE
from .topics import PARTITIONS, topic

TERMINAL_DIR = Path(__file__).resolve().parent.parent / "terminal"
REPO = TERMINAL_DIR.parent.parent
LAB_POLICY = REPO / "services/lab/yigongti_lab/policy"
CONTRACT_FILE = "intake-contract.json"
CATALOGUE_FILE = "lab-catalogue.json"
VECTORS_FILE = "signing-vectors.json"

VERSION = "1.0.0"

# --- the signing rule (kit/intake_auth.py implements it) ---------------------------

TERMINAL_ID_HEADER = "x-terminal-id"
NONCE_HEADER = "x-nonce"
SIGNATURE_HEADER = "x-signature"
TERMINAL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
NONCE_MIN_HEX, NONCE_MAX_HEX = 32, 128
SIGNED_FIELDS = ("ce_type", "ce_id", "ce_source", "ce_time", NONCE_HEADER,
                 TERMINAL_ID_HEADER, "sha256_hex(value)")
SEPARATOR = "\n"
DEFAULT_MAX_SKEW_S = 300  # KitSettings.intake_max_skew_s
DEFAULT_MAX_RECORD_BYTES = 262_144  # KitSettings.max_record_bytes


def terminal_source(terminal_id: str) -> str:
    return f"/terminals/{terminal_id}"


def signing_input(*, ce_type: str, ce_id: str, ce_source: str, ce_time: str, nonce: str,
                  terminal_id: str, value: bytes) -> bytes:
    """The bytes a terminal signs (an implementation of the rule, independent of the kit's)."""
    fields = (ce_type, ce_id, ce_source, ce_time, nonce, terminal_id,
              hashlib.sha256(value).hexdigest())
    return SEPARATOR.join(fields).encode("utf-8")


# --- meanings of the platform's codes ------------------------------------------------

PLATFORM_REASON_MEANINGS: dict[str, str] = {
    "malformed_json": "The value is not UTF-8 JSON (a dead-letter copy is kept).",
    "schema_violation": "The payload breaks its JSON Schema or a model rule (limits below); "
                        "`fields` names each path and a code, never a value.",
    "unknown_type": "ce_type is not one this service takes on intake (dead-lettered).",
    "missing_header": "A required CloudEvents header is absent (dead-lettered).",
    "bad_header": "A header is not UTF-8, holds a control character, is empty or too long, "
                  "or ce_time is not RFC 3339 with a timezone (dead-lettered).",
    "duplicate_header": "A header appears twice (dead-lettered).",
    "unsupported_specversion": "ce_specversion is not 1.0 (dead-lettered).",
    "bad_content_type": "content-type is not application/json[; charset=utf-8] (dead-lettered).",
    "key_mismatch": "The Kafka key is not the value of the payload's key field.",
    "oversized": "The value is larger than MAX_RECORD_BYTES (dead-lettered).",
    "replayed_nonce": "This terminal used this x-nonce before.",
    "forbidden_institution": "The terminal's registered institution may not send this record "
                             "(another clinic's order or tube; results for another lab centre).",
    "duplicate_id_conflict": "This ce_id was used before, by this sender, for another value.",
    "processing_error": "The service failed on the record (a bug, retried first); "
                        "dead-lettered for ops. Send nothing again: ops replay it.",
}

UNVERIFIED_REASON_MEANINGS: dict[str, str] = {
    "missing_signature": "x-terminal-id, x-nonce or x-signature is absent.",
    "source_mismatch": "ce_source is not /terminals/<x-terminal-id>.",
    "unknown_terminal": "No active registered key for x-terminal-id.",
    "bad_signature": "The signature (or the nonce, or the terminal id) is malformed, or does "
                     "not verify for the registered key and these bytes; also a signed "
                     "header sent twice.",
    "stale_timestamp": "ce_time is outside the freshness window, or unreadable.",
}


# --- the lab's data ------------------------------------------------------------------


def _lab_policy(name: str) -> dict[str, Any]:
    return yaml.safe_load((LAB_POLICY / name).read_text("utf-8"))


def lab_catalogue() -> dict[str, Any]:
    """The orderable test codes and the codes analysers may report, from the catalogue."""
    data = _lab_policy("catalogue.yaml")

    def entry(test: dict[str, Any]) -> dict[str, Any]:
        out = {"code": test["code"], "name_zh": test["name_zh"], "loinc": test.get("loinc"),
               "tube": test["tube"], "unit": test.get("unit")}
        if test.get("reports"):
            out["reports"] = test["reports"]
        out["analyser_codes"] = test.get("analyser_codes", [])
        return out

    tests = data["tests"]
    return {
        "source": "services/lab/yigongti_lab/policy/catalogue.yaml",
        "catalogue_version": data.get("version"),
        "about": (
            "LabOrderPlaced.tests[].code and SpecimenCollected/LabOrderCancelled.tests take the "
            "`code` of an orderable test; a code not listed is refused unknown_test, a line "
            "reported within a panel not_orderable. A tube carries only tests of its `tube`, "
            "else wrong_tube. AnalyserResults.observations[].code takes one of a test's "
            "`analyser_codes` (or its `code`), in the test's `unit`, else unit_mismatch."),
        "orderable": [entry(t) for t in tests if t.get("orderable", True)],
        "reported_within_panels": [entry(t) for t in tests if not t.get("orderable", True)],
    }


# What an intake record of the lab waits for when it arrives first (the lab's
# handlers raise Park for these; a CriticalValueAck never waits: an unknown
# critical_id is refused at once).
_LAB_WAITS_FOR = {
    "yigongti.lab.specimen.collected.v1": "its order",
    "yigongti.lab.specimen.dispatched.v1": "each of its tubes (the known ones move at once)",
    "yigongti.lab.order.cancelled.v1": "its order",
    "yigongti.lab.analyser_results.sent.v1": "its tube, then the tube's receipt at the lab",
}


def _parked(service: str) -> dict[str, Any]:
    if service != "lab":
        return {}
    grace = _lab_policy("parking.yaml")["grace_minutes"]
    return {t: {"waits_for": what, "grace_minutes": grace[t]}
            for t, what in _LAB_WAITS_FOR.items()}


# --- who sends what (the lab) --------------------------------------------------------

_LAB_SENDERS = {
    "yigongti.lab.order.placed.v1": "A clinic terminal of ordering_institution.",
    "yigongti.lab.specimen.collected.v1": "A clinic terminal of the order's institution.",
    "yigongti.lab.specimen.dispatched.v1": "A clinic terminal of the tubes' ordering "
                                           "institution.",
    "yigongti.lab.order.cancelled.v1": "A clinic terminal of the order's institution.",
    "yigongti.lab.critical_value.ack.v1": "A clinic terminal of the order's institution.",
    "yigongti.lab.analyser_results.sent.v1": "The LIS bridge of the lab centre that received "
                                             "the tube.",
}


# --- the documents -------------------------------------------------------------------


def _service(service: str) -> dict[str, Any]:
    intake: tuple[type[StrictModel], ...] = INTAKE_BY_SERVICE[service]
    intake_topic = topic(f"{service}.intake.v1")
    return {
        "asyncapi": f"../asyncapi/{service}.yaml",
        "intake_topic": intake_topic.name,
        "intake_partitions": intake_topic.partitions,
        "events_topic": f"{service}.events.v1",
        "messages": {
            m.CE_TYPE: {
                "name": m.__name__,
                "schema": f"../schemas/{m.CE_TYPE}.json",
                "key_field": m.KEY_FIELD,
                "sender": _LAB_SENDERS.get(m.CE_TYPE, "") if service == "lab" else "",
            } for m in intake
        },
        "domain_reasons": dict(sorted(REJECTION_REASONS_BY_SERVICE.get(service, {}).items())),
        "parked": _parked(service),
        "catalogue": CATALOGUE_FILE if service == "lab" else None,
        "examples": {
            "about": (
                f"The intake examples of ../asyncapi/{service}.yaml, sent in this order by "
                "these terminals, with a fresh ce_time, x-nonce and x-signature each (the "
                "published ones are placeholders), get these answers. The terminals are the "
                "dev terminals of `make demo` and the tests, registered for these "
                "institutions."),
            "sequence": [
                {"message": m.__name__, "ce_type": m.CE_TYPE,
                 "terminal": EXAMPLE_SENDERS[m][0], "institution": EXAMPLE_SENDERS[m][1],
                 **EXAMPLE_OUTCOMES[m]}
                for m in intake if m in EXAMPLES
            ],
        },
    }


def contract() -> dict[str, Any]:
    """intake-contract.json as a dict."""
    if (set(PLATFORM_REASON_MEANINGS) != PLATFORM_REJECTION_REASONS
            or set(UNVERIFIED_REASON_MEANINGS) != UNVERIFIED_REASONS):
        raise RuntimeError("every reason code of common.py needs its meaning here")
    return {
        "contract": "yigongti signed intake",
        "version": VERSION,
        "readme": "README.md",
        "envelope": {
            "binding": "CloudEvents 1.0, Kafka protocol binding, binary content mode: the "
                       "attributes are headers, the value is the JSON payload",
            "required_headers": list(ce.REQUIRED_HEADERS),
            "optional_headers": [ce.H_SUBJECT, ce.H_TRACEPARENT, ce.H_TRACESTATE],
            "ce_specversion": ce.SPECVERSION,
            "content_type": "application/json, optionally with ; charset=utf-8",
            "ce_time": "RFC 3339 with a timezone (Z or +hh:mm/-hh:mm), T and Z in either "
                       "case, 0 to 9 fraction digits: "
                       r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$",
            "ce_id": "Unique per record of this terminal; a UUID is recommended. A resend "
                     "of the same record keeps its ce_id and its value. An id that does not "
                     "match answer_key_pattern is taken, but a refusal cannot name it "
                     "(IntakeRejected.rejected_id is then absent).",
            "ce_source": "/terminals/<x-terminal-id>",
            "header_encoding": "UTF-8",
            "attribute_max_chars": ce.MAX_ATTRIBUTE_LEN,
            "attributes_checked": [ce.H_ID, ce.H_SOURCE, ce.H_TYPE, ce.H_SUBJECT],
            "control_characters": "refused in those attributes: U+0000-U+001F, U+007F-U+009F",
            "each_header_once": True,
            "answer_key_pattern": ID_PATTERN,
        },
        "signing": {
            "algorithm": "Ed25519 (RFC 8032), pure: the input bytes are signed as they are",
            "headers": {
                TERMINAL_ID_HEADER: "the terminal id, as registered: " + TERMINAL_ID_PATTERN,
                NONCE_HEADER: "see nonce",
                SIGNATURE_HEADER: "standard base64 (RFC 4648 section 4, with padding) of the "
                                  "64-byte signature",
            },
            "input_fields": list(SIGNED_FIELDS),
            "separator": SEPARATOR,
            "separator_note": "one line feed (U+000A) between fields, none before the first "
                              "or after the last",
            "encoding": "UTF-8 of the joined string",
            "value_hash": "SHA-256 of the record value's bytes exactly as sent, as 64 "
                          "lowercase hex characters",
            "header_values": "each header value exactly as sent (ce_time is not "
                             "re-formatted: 2025-01-15t10:00:00+08:00 is signed as written)",
            "ce_source": "must be /terminals/<x-terminal-id>, else source_mismatch",
            "public_key_registration": "base64 of the raw 32-byte Ed25519 public key (or a "
                                       "PEM SubjectPublicKeyInfo), with the terminal id and "
                                       "its institution, in the service's TERMINALS_FILE",
            "vectors": VECTORS_FILE,
        },
        "nonce": {
            "header": NONCE_HEADER,
            "random_bytes_min": NONCE_MIN_HEX // 2,
            "encoding": "hex, as sent is signed and compared",
            "pattern": f"^[0-9a-f]{{{NONCE_MIN_HEX},{NONCE_MAX_HEX}}}$",
            "even_length": True,
            "case": "lowercase; the service also takes upper case, and a nonce is "
                    "compared as sent",
            "single_use": "per terminal: the pair (x-terminal-id, x-nonce) is used once. A "
                          "repeat from a verified sender is answered replayed_nonce. A new "
                          "nonce for every send, resends included.",
            "kept_for": "at least twice the freshness window (INTAKE_MAX_SKEW_S)",
        },
        "freshness": {
            "rule": "received_at - max_skew_s - held_up_s <= ce_time <= received_at + "
                    "max_skew_s",
            "max_skew_s": DEFAULT_MAX_SKEW_S,
            "max_skew_setting": "INTAKE_MAX_SKEW_S (seconds; the default is given)",
            "received_at": {
                "apache_kafka": "the record's LogAppendTime, stamped by the broker: intake "
                                "topics have message.timestamp.type=LogAppendTime (the "
                                "service refuses to start otherwise); the producer's own "
                                "timestamp is never used",
                "embedded_broker": "the service's clock when it first sees the record "
                                   "(that broker keeps the sender's time)",
            },
            "held_up_s": "as much again as the service's consumer was held up by an "
                         "infrastructure fault just before (records sent during a database "
                         "outage are read after it); 0 otherwise",
            "sign_when": "when sending, never when capturing: an event queued offline "
                         "keeps its capture time in its payload's own fields",
            "when_stale": "stale_timestamp: not verified, never answered. Send it again "
                          "with a fresh ce_time, a new nonce and a new signature, the same "
                          "ce_id and the same value.",
        },
        "kafka": {
            "topic": "<service>.intake.v1 (a deployment may put TOPIC_PREFIX before it)",
            "partitions": PARTITIONS["intake"],
            "key": "the UTF-8 of the value of the payload field the schema names in "
                   "x-key-field (order_id; barcode for AnalyserResults; shipment_id for "
                   "SpecimenDispatched); another key is refused key_mismatch",
            "partitioner": "murmur2: partition = (murmur2(key bytes) & 0x7fffffff) % "
                           "partitions, as Apache Kafka's Java client and aiokafka's "
                           "DefaultPartitioner compute it",
            "librdkafka": {"partitioner": "murmur2_random"},
            "partitioner_why": "one aggregate's records must land on one partition, in "
                               "order. librdkafka's default (consistent_random, CRC32) puts "
                               "most keys elsewhere than the Java client and aiokafka do, so "
                               "an order's records could land on two partitions and be "
                               "applied out of order.",
            "producer": {"acks": "all", "enable.idempotence": "true on Apache Kafka (the "
                                                              "embedded broker has none)"},
            "embedded_broker_group_join": "The embedded test broker (Tansu) gives a new "
                                          "consumer group its first assignment only after "
                                          "about half the session timeout: librdkafka's "
                                          "default session.timeout.ms of 45 s means about "
                                          "23 s. To read a topic in tests, assign() the "
                                          "partitions (no group join), or set "
                                          "session.timeout.ms low (2000 gives about 1 s).",
        },
        "answers": {
            "accepted": "the service's events on <service>.events.v1 (e.g. LabOrderAccepted), "
                        "keyed by the aggregate id; a clinic also reads them on the HTTP "
                        "feed (GET /feed, bearer token)",
            "refused": "yigongti.intake.rejected.v1 on <service>.events.v1, keyed by the "
                       "refused record's key when it matches answer_key_pattern, else by "
                       "its ce_id; rejected_id is its ce_id; `fields` lists (path, code) "
                       "pairs, never values; at most 50",
            "duplicate": "a record whose (ce_source, ce_id) and value were applied before "
                         "has no effect and no new answer",
            "never_answered": "a record whose sender is not verified (unverified reasons "
                              "below): no IntakeRejected, no dead letter, nothing in a feed. "
                              "Ops see it (yigongti-dlq unverified: coordinates, claimed "
                              "terminal, reason; never the payload).",
        },
        "reason_codes": {
            "note": "IntakeRejected.reason is an open code in the frozen schema (pattern "
                    "^[a-z][a-z0-9_]{0,63}$): a reader treats an unknown code as a refusal "
                    "it has no special handling for.",
            "platform": dict(sorted(PLATFORM_REASON_MEANINGS.items())),
            "unverified_never_answered": dict(sorted(UNVERIFIED_REASON_MEANINGS.items())),
            "services": {s: dict(sorted(REJECTION_REASONS_BY_SERVICE.get(s, {}).items()))
                         for s in INTAKE_BY_SERVICE},
        },
        "limits": {
            "record_value_max_bytes": DEFAULT_MAX_RECORD_BYTES,
            "record_value_max_setting": "MAX_RECORD_BYTES (the default is given); larger is "
                                        "refused oversized",
            "attribute_max_chars": ce.MAX_ATTRIBUTE_LEN,
            "terminal_id": TERMINAL_ID_PATTERN,
            "nonce_hex_chars": [NONCE_MIN_HEX, NONCE_MAX_HEX],
            "json": "one UTF-8 JSON object; no key twice in any object (schema_violation, "
                    "code duplicate_key); no field the schema does not name",
            "strict_types": "no boolean for an integer, no numeric string for a number, no "
                            "number for a time or a code; decimals (money, measured values) "
                            "are strings such as \"4.10\"",
            "times": "every time is RFC 3339 with a timezone (Z or an offset); a time "
                     "without one is refused; times are kept in UTC",
            "age": {"years": [1, 150], "days": [0, 365],
                    "rule": "under one year give days, from one year on give years"},
            "unique": ["LabOrderPlaced.tests[].code", "SpecimenCollected.tests",
                       "SpecimenDispatched.barcodes", "LabOrderCancelled.tests"],
            "other_model_rules": [
                "SpecimenCollected: centrifuged_at is not before collected_at; "
                "recollection_of is not the tube's own barcode",
            ],
            "rules_beyond_the_schema": "age, unique and other_model_rules are checked by "
                                       "the service beyond the JSON Schema (answered "
                                       "schema_violation, field code value_error)",
        },
        "patient_ref": {
            "pattern": PATIENT_REF_PATTERN,
            "what": "pseudonymous: <key version>:<HMAC-SHA256 of the normalised national ID>; "
                    "only the insured-person registry (settlement service) holds the key. A "
                    "terminal never computes a ref and never stores the ID number.",
            "lookup": {
                "status": "planned: the settlement service will offer it (not served yet)",
                "method": "POST",
                "path": "/patients/lookup",
                "auth": "bearer token of the terminal's institution (EdDSA, as the other "
                        "HTTP APIs)",
                "request": {"national_id": "the resident identity number (GB 11643-1999)"},
                "response": {"patient_ref": PATIENT_REF_PATTERN},
            },
            "until_then": "No service gives refs yet. The demo and the tests use fixed "
                          "synthetic refs that match the pattern (e.g. v1: followed by "
                          "64 hex digits in deploy/yigongti_deploy/demo.py); the lab checks "
                          "only the pattern and never recomputes a ref.",
        },
        "services": {s: _service(s) for s in INTAKE_BY_SERVICE},
    }


# --- signing test vectors ----------------------------------------------------------------

VECTOR_TERMINAL = "test-terminal-1"


def _compact(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _vector_cases() -> list[dict[str, Any]]:
    from .lab import v1

    order = EXAMPLES[v1.LabOrderPlaced].model_dump(mode="json")
    results = EXAMPLES[v1.AnalyserResults].model_dump(mode="json")
    source = terminal_source(VECTOR_TERMINAL)
    return [
        {"name": "order, compact JSON, ce_time in UTC with Z",
         "ce_type": v1.LabOrderPlaced.CE_TYPE, "ce_id": "5f0c6f5e-1d2b-4c3a-9e8f-0a1b2c3d4e5f",
         "ce_source": source, "ce_time": "2025-01-15T02:00:00.000000Z",
         "nonce": "00112233445566778899aabbccddeeff", "value": _compact(order),
         "key": order["order_id"]},
        {"name": "the same order pretty-printed: other bytes, another hash and signature",
         "ce_type": v1.LabOrderPlaced.CE_TYPE, "ce_id": "5f0c6f5e-1d2b-4c3a-9e8f-0a1b2c3d4e5f",
         "ce_source": source, "ce_time": "2025-01-15T02:00:00.000000Z",
         "nonce": "00112233445566778899aabbccddeeff",
         "value": json.dumps(order, indent=2).encode("utf-8"), "key": order["order_id"]},
        {"name": "ce_time with an offset and lower-case t, signed as written; 32-byte nonce",
         "ce_type": v1.AnalyserResults.CE_TYPE, "ce_id": "a3c5e7f9-0b1d-4f3e-8a6c-2e4f6a8c0e1b",
         "ce_source": source, "ce_time": "2025-01-15t10:00:00.123456789+08:00",
         "nonce": "f0e1d2c3b4a5968778695a4b3c2d1e0f" * 2, "value": _compact(results),
         "key": results["barcode"]},
    ]


def vectors(existing: dict[str, Any] | None) -> dict[str, Any]:
    """signing-vectors.json: the TEST key kept from `existing` (else generated once)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if existing:
        seed = base64.b64decode(existing["test_key"]["private_seed_base64"], validate=True)
        key = Ed25519PrivateKey.from_private_bytes(seed)
    else:
        key = Ed25519PrivateKey.generate()
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    public = key.public_key()
    raw_public = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    cases = []
    for case in _vector_cases():
        message = signing_input(ce_type=case["ce_type"], ce_id=case["ce_id"],
                                ce_source=case["ce_source"], ce_time=case["ce_time"],
                                nonce=case["nonce"], terminal_id=VECTOR_TERMINAL,
                                value=case["value"])
        signature = base64.b64encode(key.sign(message)).decode()
        cases.append({
            "name": case["name"],
            "input": {
                "ce_type": case["ce_type"], "ce_id": case["ce_id"],
                "ce_source": case["ce_source"], "ce_time": case["ce_time"],
                NONCE_HEADER: case["nonce"], TERMINAL_ID_HEADER: VECTOR_TERMINAL,
                "value_base64": base64.b64encode(case["value"]).decode(),
                "kafka_key": case["key"],
            },
            "expected": {
                "value_sha256_hex": hashlib.sha256(case["value"]).hexdigest(),
                "signing_input_utf8": message.decode("utf-8"),
                "signing_input_base64": base64.b64encode(message).decode(),
                "signing_input_hex": message.hex(),
                SIGNATURE_HEADER: signature,
            },
        })
    return {
        "about": "Signing test vectors of the intake contract (intake-contract.json, "
                 "README.md). The key below is a TEST key, published on purpose: never "
                 "register it for a real terminal. Ed25519 signatures are deterministic, so "
                 "an implementation must reproduce `expected` byte for byte.",
        "test_key": {
            "WARNING": "TEST KEY - PUBLIC - NEVER USE IN PRODUCTION",
            "terminal_id": VECTOR_TERMINAL,
            "private_seed_base64": base64.b64encode(seed).decode(),
            "private_seed_hex": seed.hex(),
            "private_key_pem": key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()).decode(),
            "public_key_base64": base64.b64encode(raw_public).decode(),
            "public_key_pem": public.public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
        },
        "cases": cases,
    }


# --- files ---------------------------------------------------------------------------


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _read(path: Path) -> str | None:
    return path.read_text("utf-8") if path.exists() else None


def current(directory: Path = TERMINAL_DIR) -> dict[str, str]:
    """File name → rendered text of every generated file."""
    old_vectors = _read(directory / VECTORS_FILE)
    return {
        CONTRACT_FILE: render(contract()),
        CATALOGUE_FILE: render(lab_catalogue()),
        VECTORS_FILE: render(vectors(json.loads(old_vectors) if old_vectors else None)),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    differ = []
    for name, text in current().items():
        path = TERMINAL_DIR / name
        if _read(path) == text:
            continue
        differ.append(name)
        if not check:
            TERMINAL_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text, "utf-8")
    verb = "differ" if check else "written"
    print(f"{len(differ)} file(s) {verb} in {TERMINAL_DIR}: {', '.join(differ) or '-'}")
    return 1 if check and differ else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""AsyncAPI 3.0.0 documents, one per service, from the registries.

    python -m yigongti_contracts.asyncapi          # write contracts/asyncapi/<service>.yaml
    python -m yigongti_contracts.asyncapi --check  # exit 1 if a file differs

Operations are from the service's point of view: it receives its intake
(`registry.INTAKE_BY_SERVICE`) and the events topics of the owners it
subscribes to (`topics.SUBSCRIBES_TO`, read as a tolerant reader), and sends
its events (`registry.EVENTS_BY_OWNER`) and its dead letters. A service with
none of these has no document; one gets its document by adding its contracts
to the registry. Payloads are the contracts' JSON Schemas; headers are the
CloudEvents Kafka binding (envelope.py) and, on intake, the terminal's
signature (contracts/terminal/README.md).
"""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic.json_schema import models_json_schema

from . import envelope as ce
from .base import StrictModel
from .common import PLATFORM_REJECTION_REASONS, UNVERIFIED_REASONS, IntakeRejected
from .examples import EXAMPLE_OUTCOMES, EXAMPLE_SENDERS, EXAMPLES
from .registry import EVENTS_BY_OWNER, INTAKE_BY_SERVICE, REJECTION_REASONS_BY_SERVICE
from .topics import (
    DLQ_AT_HEADER,
    DLQ_CONSUMER_HEADER,
    DLQ_ERROR_DETAIL_HEADER,
    DLQ_ERROR_HEADER,
    DLQ_SOURCE_OFFSET_HEADER,
    DLQ_SOURCE_PARTITION_HEADER,
    DLQ_SOURCE_TOPIC_HEADER,
    SERVICES,
    SUBSCRIBES_TO,
    topic,
)

ASYNCAPI_DIR = Path(__file__).resolve().parent.parent / "asyncapi"
KAFKA_BINDING = "0.5.0"
REF = "#/components/schemas/{model}"
# Relative to the document (contracts/asyncapi/<service>.yaml).
TERMINAL_README = "../terminal/README.md"
TERMINAL_CONTRACT = "../terminal/intake-contract.json"
SIGNING_VECTORS = "../terminal/signing-vectors.json"

INFO: dict[str, dict[str, str]] = {
    "lab": {
        "title": "yigongti lab service (医学检验共享中心)",
        "version": "1.3.0",
        "description": (
            "The county lab centre of the Changji medical community: clinics and "
            "analysers publish intake, the lab publishes its events."),
    },
    "referral": {
        "title": "yigongti referral service (双向转诊)",
        "version": "1.0.0",
        "description": (
            "Two-way referral in the Changji medical community: clinics and referral "
            "coordinators publish intake, the referral service publishes the cases' events "
            "and reads the diagnosis and lab services' events."),
    },
}
_LIS = "yigongti.lab.analyser_results.sent.v1"


@dataclass(frozen=True)
class ServiceContracts:
    """What a service's document describes, from the registries."""

    service: str
    intake: tuple[type[StrictModel], ...]
    events: tuple[type[StrictModel], ...]
    reads: tuple[tuple[str, tuple[type[StrictModel], ...]], ...]  # (owner, its events)
    pending: tuple[str, ...] = ()  # owners it reads that publish no contracts yet

    @property
    def empty(self) -> bool:
        return not (self.intake or self.events or self.reads)


def contracts_of(service: str) -> ServiceContracts:
    return ServiceContracts(
        service=service,
        intake=INTAKE_BY_SERVICE.get(service, ()),
        events=EVENTS_BY_OWNER.get(service, ()),
        reads=tuple((owner, EVENTS_BY_OWNER[owner]) for owner in SUBSCRIBES_TO[service]
                    if EVENTS_BY_OWNER.get(owner)),
        pending=tuple(o for o in SUBSCRIBES_TO[service] if not EVENTS_BY_OWNER.get(o)),
    )


def documented_services() -> tuple[str, ...]:
    """The services that have a document: their own contracts, or events they read."""
    return tuple(s for s in SERVICES if not contracts_of(s).empty)


def _string(description: str, **more: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **more}


def _cap(name: str) -> str:
    return name[:1].upper() + name[1:]


# --- headers -----------------------------------------------------------------------


def _headers_schemas(with_intake: bool) -> dict[str, Any]:
    envelope = {
        "type": "object",
        "description": "CloudEvents 1.0, Kafka binary binding (DESIGN §4). Each header "
                       "once, UTF-8, no control characters.",
        "required": list(ce.REQUIRED_HEADERS),
        "properties": {
            ce.H_SPECVERSION: _string("CloudEvents version.", const=ce.SPECVERSION),
            ce.H_ID: _string("Event id (a UUID): unique per source; a resend keeps it.",
                             minLength=1, maxLength=ce.MAX_ATTRIBUTE_LEN),
            ce.H_SOURCE: _string("Publishing service (/yigongti/<service>) or terminal "
                                 "(/terminals/<terminal id>).",
                                 minLength=1, maxLength=ce.MAX_ATTRIBUTE_LEN),
            ce.H_TYPE: _string("Contract type, e.g. yigongti.lab.order.placed.v1.",
                               minLength=1, maxLength=ce.MAX_ATTRIBUTE_LEN),
            ce.H_TIME: _string("RFC 3339 with a timezone (Z or an offset); services write "
                               "UTC with Z. On intake it is signed exactly as sent and must "
                               f"be fresh ({TERMINAL_README}, freshness).", format="date-time"),
            ce.H_SUBJECT: _string("The aggregate id.", minLength=1,
                                  maxLength=ce.MAX_ATTRIBUTE_LEN),
            ce.H_AGGSEQ: _string("Our extension aggseq: the event's number among its aggregate's "
                                 "(ce_source, ce_subject) events, 1, 2, 3…; a gap or a "
                                 "reordering shows. Not the CloudEvents sequence extension.",
                                 pattern=r"^[0-9]{1,19}$"),
            ce.H_CONTENT_TYPE: _string("Payload media type.",
                                       pattern=r"^application/json(; ?charset=utf-8)?$"),
            ce.H_TRACEPARENT: _string("W3C trace context."),
            ce.H_TRACESTATE: _string("W3C trace context."),
        },
    }
    dead_letter = {
        "type": "object",
        "description": "The undecodable record's own headers, plus where it came from.",
        "required": [DLQ_ERROR_HEADER, DLQ_SOURCE_TOPIC_HEADER,
                     DLQ_SOURCE_PARTITION_HEADER, DLQ_SOURCE_OFFSET_HEADER],
        "properties": {
            DLQ_ERROR_HEADER: _string("Error code (never a value)."),
            DLQ_ERROR_DETAIL_HEADER: _string("Field names and codes of the error."),
            DLQ_SOURCE_TOPIC_HEADER: _string("Topic the record was read from."),
            DLQ_SOURCE_PARTITION_HEADER: _string("Its partition, decimal.",
                                                 pattern=r"^[0-9]+$"),
            DLQ_SOURCE_OFFSET_HEADER: _string("Its offset, decimal.", pattern=r"^[0-9]+$"),
            DLQ_CONSUMER_HEADER: _string("The service that could not decode it."),
            DLQ_AT_HEADER: _string("When it was dead-lettered.", format="date-time"),
        },
    }
    schemas: dict[str, Any] = {"CloudEventHeaders": envelope}
    if with_intake:
        schemas["SignedIntakeHeaders"] = {"allOf": [
            {"$ref": REF.format(model="CloudEventHeaders")},
            {
                "type": "object",
                "description": (
                    "Intake is signed with the terminal's registered Ed25519 key over the "
                    "UTF-8 of ce_type, ce_id, ce_source, ce_time (as sent), x-nonce, "
                    "x-terminal-id and the lowercase hex SHA-256 of the value, joined by "
                    f"a line feed. The exact rule: {TERMINAL_README}; machine-readable: "
                    f"{TERMINAL_CONTRACT}; test vectors: {SIGNING_VECTORS}. A record whose "
                    "signature does not verify is never answered."),
                "required": ["x-terminal-id", "x-nonce", "x-signature"],
                "properties": {
                    ce.H_SOURCE: _string("/terminals/<x-terminal-id>.",
                                         pattern=r"^/terminals/[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"),
                    "x-terminal-id": _string("Registered terminal id.",
                                             pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"),
                    "x-nonce": _string("16 to 64 random bytes as hex (lowercase), new for "
                                       "every send; used once per terminal.",
                                       pattern=r"^([0-9a-fA-F]{2}){16,64}$"),
                    "x-signature": _string("Standard base64 (with padding) of the 64-byte "
                                           "Ed25519 signature.",
                                           pattern=r"^[A-Za-z0-9+/]{86}==$"),
                },
            },
        ]}
    schemas["DeadLetterHeaders"] = dead_letter
    return schemas


# --- messages ------------------------------------------------------------------------


def _reason_codes(service: str) -> dict[str, Any]:
    return {
        "platform": sorted(PLATFORM_REJECTION_REASONS),
        "service": sorted(REJECTION_REASONS_BY_SERVICE.get(service, {})),
        "never_answered": sorted(UNVERIFIED_REASONS),
        "meanings": TERMINAL_CONTRACT + " (reason_codes)",
    }


def _example_id(model: type[StrictModel]) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:yigongti:example:{model.CE_TYPE}"))


def _outcome_text(model: type[StrictModel]) -> str:
    outcome = EXAMPLE_OUTCOMES[model]
    if outcome["outcome"] == "accepted":
        return f"accepted, answered with {outcome['answer']}."
    if outcome["outcome"] == "refused":
        return f"refused {outcome['reason']}: {outcome['why']}"
    return f"parked, then refused {outcome['then_reason']}: {outcome['why']}"


def _example(model: type[StrictModel], owner: str, intake: bool) -> dict[str, Any]:
    instance = EXAMPLES[model]
    key = instance.kafka_key()
    example: dict[str, Any] = {"name": model.__name__}
    if intake:
        terminal, institution = EXAMPLE_SENDERS[model]
        source = f"/terminals/{terminal}"
        example["summary"] = (
            f"Sent by terminal {terminal} (registered for {institution}) after the examples "
            f"before it on this channel: {_outcome_text(model)} ce_time, x-nonce and "
            f"x-signature are placeholders: make them fresh and sign ({TERMINAL_README}).")
    else:
        source = f"/yigongti/{owner}"
    env = ce.Envelope(
        id=_example_id(model), source=source, type=model.CE_TYPE,
        time=datetime(2025, 1, 15, 2, 0, tzinfo=UTC), subject=key,
        aggseq=None if intake else 1,
    )
    headers = {name: value.decode() for name, value in ce.to_headers(env)}
    if intake:
        headers.update({"x-terminal-id": terminal, "x-nonce": "00" * 16,
                        "x-signature": "A" * 86 + "=="})
    example["headers"] = headers
    example["payload"] = instance.model_dump(mode="json")
    return example


def _message(model: type[StrictModel], owner: str, intake: bool) -> dict[str, Any]:
    doc = (model.__doc__ or model.__name__).strip().splitlines()
    base = "SignedIntakeHeaders" if intake else "CloudEventHeaders"
    key = f"The record key: the UTF-8 of the value of `{model.KEY_FIELD}`"
    key += (", partitioned by murmur2 (librdkafka: partitioner=murmur2_random); another "
            "key is refused key_mismatch." if intake else ".")
    message: dict[str, Any] = {
        "name": model.CE_TYPE,
        "title": model.__name__,
        "summary": doc[0],
        "contentType": ce.CONTENT_TYPE,
        "headers": {"allOf": [
            {"$ref": REF.format(model=base)},
            {"type": "object", "properties": {ce.H_TYPE: {"const": model.CE_TYPE}}},
        ]},
        "payload": {"$ref": REF.format(model=model.__name__)},
        "bindings": {"kafka": {
            "key": _string(key),
            "bindingVersion": KAFKA_BINDING,
        }},
    }
    if model is IntakeRejected:
        codes = _reason_codes(owner)
        message["description"] = (
            "The answer to an intake record the service refused. `reason` is one of the "
            f"platform's codes ({', '.join(codes['platform'])}) or the service's own "
            f"({', '.join(codes['service']) or 'none yet'}); their meanings are in "
            f"{TERMINAL_CONTRACT}. A record whose sender is not verified "
            f"({', '.join(codes['never_answered'])}) is never answered. The schema keeps "
            "`reason` an open code, so a new code breaks no reader.")
        message["x-reason-codes"] = codes
    if model in EXAMPLES:
        message["examples"] = [_example(model, owner, intake)]
    return message


# --- channels and operations -----------------------------------------------------------


def _channel(name: str, messages: list[str], description: str) -> dict[str, Any]:
    t = topic(name)
    return {
        "address": name,
        "title": name,
        "description": description,
        "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in messages},
        "bindings": {"kafka": {"topic": name, "partitions": t.partitions,
                               "bindingVersion": KAFKA_BINDING}},
    }


def _refs(channel: str, names: list[str]) -> list[dict[str, str]]:
    return [{"$ref": f"#/channels/{channel}/messages/{n}"} for n in names]


def _group(group: str) -> dict[str, Any]:
    return {"kafka": {"groupId": {"type": "string", "enum": [group]},
                      "bindingVersion": KAFKA_BINDING}}


def document(service: str = "lab") -> dict[str, Any]:
    """The AsyncAPI document of `service` as a dict (ValueError when it has none)."""
    c = contracts_of(service)
    if c.empty:
        raise ValueError(f"{service} has no contracts and reads no events")
    name = _cap(service)
    owned = {m.__name__: m for m in (*c.intake, *c.events)}
    read = {m.__name__: (owner, m) for owner, models in c.reads for m in models
            if m.__name__ not in owned}
    models = [*owned.values(), *(m for _, m in read.values())]
    _, defs = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    schemas = dict(sorted(defs["$defs"].items()))
    schemas.update(_headers_schemas(bool(c.intake)))
    schemas["DeadLetterPayload"] = {
        "description": "The original record value, byte for byte (it could not be decoded)."
    }

    messages: dict[str, Any] = {}
    messages.update({m.__name__: _message(m, service, True) for m in c.intake})
    messages.update({m.__name__: _message(m, service, False) for m in c.events})
    messages.update({n: _message(m, owner, False) for n, (owner, m) in read.items()})
    messages["DeadLetter"] = {
        "name": "dead_letter",
        "title": "DeadLetter",
        "summary": f"A copy of a record the {service} service could not decode.",
        "headers": {"$ref": REF.format(model="DeadLetterHeaders")},
        "payload": {"$ref": REF.format(model="DeadLetterPayload")},
        "bindings": {"kafka": {"key": _string("The original record's key, unchanged."),
                               "bindingVersion": KAFKA_BINDING}},
    }

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    if c.intake:
        names = [m.__name__ for m in c.intake]
        channels[f"{service}Intake"] = _channel(
            f"{service}.intake.v1", names,
            "Signed intake from registered terminals"
            + (" and the lab centres' LIS bridges" if _LIS in {m.CE_TYPE for m in c.intake}
               else "")
            + f"; read only by the {service} service. How to sign, the freshness rule, "
            f"the key and partitioner, the limits and the reason codes: {TERMINAL_README}.")
        operations[f"receive{name}Intake"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{service}Intake"},
            "summary": "Verify the sender, validate, store and answer each intake record.",
            "description": (
                "A record whose sender is not verified gets no answer; a verified one is "
                f"answered on {service}.events.v1 (its events, or IntakeRejected)."),
            "messages": _refs(f"{service}Intake", names),
            "bindings": _group(service),
        }
    if c.events:
        names = [m.__name__ for m in c.events]
        channels[f"{service}Events"] = _channel(
            f"{service}.events.v1", names,
            f"Written only by the {service} service, through its outbox.")
        operations[f"send{name}Events"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{service}Events"},
            "summary": f"Publish the {service} service's events from the outbox, keyed by "
                       "aggregate.",
            "messages": _refs(f"{service}Events", names),
        }
    for owner, owner_models in c.reads:
        names = [m.__name__ for m in owner_models]
        channels[f"{owner}Events"] = _channel(
            f"{owner}.events.v1", names,
            f"Written only by the {owner} service; read here as a tolerant reader.")
        operations[f"receive{_cap(owner)}Events"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{owner}Events"},
            "summary": f"Read the {owner} service's events, as a tolerant reader.",
            "description": (
                "Tolerant reader: fields the reader does not know are ignored (the owner "
                "may add optional fields within v1), and types it has no handler for are "
                "skipped and counted. Only the owner writes this topic: a record whose "
                f"ce_source is not /yigongti/{owner} or whose type is not the owner's is "
                "held as foreign_source, never applied. Each event is applied once (inbox "
                "on ce_source and ce_id); one that cannot be decoded goes to this service's "
                f"own dead-letter topic, never the owner's. The group "
                f"(<CONSUMER_GROUP>.{owner}.events.v1) starts from the earliest retained "
                "offset. Nothing read here is answered with IntakeRejected."),
            "messages": _refs(f"{owner}Events", names),
            "bindings": _group(f"{service}.{owner}.events.v1"),
            "x-tolerant-reader": True,
        }
    channels[f"{service}Dlq"] = {
        "address": f"{service}.dlq.v1",
        "title": f"{service}.dlq.v1",
        "description": f"Records the {service} service read and could not decode.",
        "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
        "bindings": {"kafka": {"topic": f"{service}.dlq.v1",
                               "partitions": topic(f"{service}.dlq.v1").partitions,
                               "bindingVersion": KAFKA_BINDING}},
    }
    operations[f"send{name}DeadLetters"] = {
        "action": "send",
        "channel": {"$ref": f"#/channels/{service}Dlq"},
        "summary": "Copy an undecodable record with its origin.",
        "messages": _refs(f"{service}Dlq", ["DeadLetter"]),
    }

    info = INFO.get(service, {
        "title": f"yigongti {service} service",
        "version": "0.1.0",
        "description": (f"What the {service} service reads, from the topic registry; its own "
                        "intake and events have no published contracts yet."),
    })
    description = info["description"] + (
        " Topic names may carry a prefix (TOPIC_PREFIX) for test isolation.")
    if c.pending:
        description += (f" It also reads {', '.join(f'{o}.events.v1' for o in c.pending)}, "
                        "whose owner publishes no contracts yet.")
    if c.intake:
        description += (
            f" Terminal vendors: {TERMINAL_README} is the contract to build from "
            f"(signing, freshness, key and partitioner, limits, reason codes), with "
            f"{TERMINAL_CONTRACT} and the signing test vectors {SIGNING_VECTORS}; the "
            "intake examples below pass the service as their summaries say.")
    doc: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "id": f"urn:yigongti:{service}",
        "info": {"title": info["title"], "version": info["version"],
                 "description": description},
        "defaultContentType": ce.CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }
    if c.intake:
        doc["x-terminal-contract"] = {"readme": TERMINAL_README, "contract": TERMINAL_CONTRACT,
                                      "signing_vectors": SIGNING_VECTORS}
    return doc


def render(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def current() -> dict[str, str]:
    """File name → rendered document of every documented service."""
    return {f"{s}.yaml": render(document(s)) for s in documented_services()}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    differ = []
    for name, text in current().items():
        path = ASYNCAPI_DIR / name
        old = path.read_text("utf-8") if path.exists() else None
        if old == text:
            continue
        differ.append(name)
        if not check:
            ASYNCAPI_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text, "utf-8")
    verb = "out of date" if check else "written"
    print(f"{len(differ)} document(s) {verb}: {', '.join(differ) or '-'}")
    return 1 if check and differ else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""AsyncAPI 3.0.0 document of the lab service's topics and messages.

    python -m yigongti_contracts.asyncapi          # write contracts/asyncapi/lab.yaml
    python -m yigongti_contracts.asyncapi --check  # exit 1 if the file differs

Operations are from the lab service's point of view: it receives
`lab.intake.v1` and sends `lab.events.v1` and `lab.dlq.v1`. Payloads are the
contracts' JSON Schemas; headers are the CloudEvents Kafka binding (envelope.py).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic.json_schema import models_json_schema

from . import envelope as ce
from .base import StrictModel
from .common import IntakeRejected
from .examples import EXAMPLES
from .lab import v1 as lab_v1
from .topics import (
    DLQ_AT_HEADER,
    DLQ_CONSUMER_HEADER,
    DLQ_ERROR_DETAIL_HEADER,
    DLQ_ERROR_HEADER,
    DLQ_SOURCE_OFFSET_HEADER,
    DLQ_SOURCE_PARTITION_HEADER,
    DLQ_SOURCE_TOPIC_HEADER,
    LAB_DLQ,
    LAB_EVENTS,
    LAB_INTAKE,
    topic,
)

ASYNCAPI_DIR = Path(__file__).resolve().parent.parent / "asyncapi"
KAFKA_BINDING = "0.5.0"
REF = "#/components/schemas/{model}"


def _string(description: str, **more: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **more}


def _headers_schemas() -> dict[str, Any]:
    envelope = {
        "type": "object",
        "description": "CloudEvents 1.0, Kafka binary binding (DESIGN §4).",
        "required": list(ce.REQUIRED_HEADERS),
        "properties": {
            ce.H_SPECVERSION: _string("CloudEvents version.", const=ce.SPECVERSION),
            ce.H_ID: _string("Event id (UUID), fixed when the outbox row is written.",
                             minLength=1, maxLength=ce.MAX_ATTRIBUTE_LEN),
            ce.H_SOURCE: _string("Publishing service or terminal (/terminals/<id>).",
                                 minLength=1, maxLength=ce.MAX_ATTRIBUTE_LEN),
            ce.H_TYPE: _string("Contract type, e.g. yigongti.lab.order.placed.v1.",
                               minLength=1, maxLength=ce.MAX_ATTRIBUTE_LEN),
            ce.H_TIME: _string("RFC 3339 time, UTC.", format="date-time"),
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
    signed = {
        "allOf": [
            {"$ref": REF.format(model="CloudEventHeaders")},
            {
                "type": "object",
                "description": "Intake is signed by the terminal's registered Ed25519 key.",
                "required": ["x-terminal-id", "x-nonce", "x-signature"],
                "properties": {
                    "x-terminal-id": _string("Registered terminal id."),
                    "x-nonce": _string("16+ random bytes, hex.", pattern=r"^[0-9a-f]{32,}$"),
                    "x-signature": _string("Base64 Ed25519 signature over type, id, "
                                           "source, time, nonce, terminal and body hash."),
                },
            },
        ]
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
    return {"CloudEventHeaders": envelope, "SignedIntakeHeaders": signed,
            "DeadLetterHeaders": dead_letter}


def _example(model: type[StrictModel], channel_kind: str) -> dict[str, Any]:
    instance = EXAMPLES[model]
    source = "/terminals/T-0042" if channel_kind == "intake" else "/services/lab"
    key = instance.kafka_key()
    env = ce.Envelope(
        id="0b6f8f7e-3c55-4a0e-9d0e-5b1f3f0c2a11", source=source, type=model.CE_TYPE,
        time=datetime(2025, 1, 15, 2, 0, tzinfo=UTC), subject=key,
        aggseq=None if channel_kind == "intake" else 1,
    )
    headers = {name: value.decode() for name, value in ce.to_headers(env)}
    if channel_kind == "intake":
        headers.update({"x-terminal-id": "T-0042", "x-nonce": "00" * 16,
                        "x-signature": "c2lnbmF0dXJl"})
    return {"name": model.__name__, "headers": headers,
            "payload": instance.model_dump(mode="json")}


def _message(model: type[StrictModel], channel_kind: str) -> dict[str, Any]:
    doc = (model.__doc__ or model.__name__).strip().splitlines()
    base = "SignedIntakeHeaders" if channel_kind == "intake" else "CloudEventHeaders"
    return {
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
            "key": _string(f"The record key: the value of `{model.KEY_FIELD}`."),
            "bindingVersion": KAFKA_BINDING,
        }},
        "examples": [_example(model, channel_kind)],
    }


def _channel(name: str, models: tuple[type[StrictModel], ...],
             description: str) -> dict[str, Any]:
    t = topic(name)
    return {
        "address": name,
        "title": name,
        "description": description,
        "messages": {m.__name__: {"$ref": f"#/components/messages/{m.__name__}"}
                     for m in models},
        "bindings": {"kafka": {"topic": name, "partitions": t.partitions,
                               "bindingVersion": KAFKA_BINDING}},
    }


def document() -> dict[str, Any]:
    """The AsyncAPI document as a dict."""
    intake = lab_v1.INTAKE
    events = (*lab_v1.EVENTS, IntakeRejected)
    _, defs = models_json_schema(
        [(m, "validation") for m in (*intake, *events)], ref_template=REF
    )
    schemas = dict(sorted(defs["$defs"].items()))
    schemas.update(_headers_schemas())
    schemas["DeadLetterPayload"] = {
        "description": "The original record value, byte for byte (it could not be decoded)."
    }

    messages = {m.__name__: _message(m, "intake") for m in intake}
    messages.update({m.__name__: _message(m, "events") for m in events})
    messages["DeadLetter"] = {
        "name": "dead_letter",
        "title": "DeadLetter",
        "summary": "A copy of an intake record the lab service could not decode.",
        "headers": {"$ref": REF.format(model="DeadLetterHeaders")},
        "payload": {"$ref": REF.format(model="DeadLetterPayload")},
        "bindings": {"kafka": {"key": _string("The original record's key, unchanged."),
                               "bindingVersion": KAFKA_BINDING}},
    }

    def refs(channel: str, names: list[str]) -> list[dict[str, str]]:
        return [{"$ref": f"#/channels/{channel}/messages/{n}"} for n in names]

    return {
        "asyncapi": "3.0.0",
        "id": "urn:yigongti:lab",
        "info": {
            "title": "yigongti lab service (医学检验共享中心)",
            "version": "1.2.0",
            "description": (
                "The county lab centre of the Changji medical community: clinics and "
                "analysers publish intake, the lab publishes its events. Topic names "
                "may carry a prefix (TOPIC_PREFIX) for test isolation."
            ),
        },
        "defaultContentType": ce.CONTENT_TYPE,
        "channels": {
            "labIntake": _channel(LAB_INTAKE, intake, "From clinic terminals and "
                                  "analysers (signed); read only by the lab service."),
            "labEvents": _channel(LAB_EVENTS, events, "Written only by the lab service, "
                                  "through its outbox."),
            "labDlq": {
                "address": LAB_DLQ,
                "title": LAB_DLQ,
                "description": "Intake records the lab service could not decode.",
                "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
                "bindings": {"kafka": {"topic": LAB_DLQ,
                                       "partitions": topic(LAB_DLQ).partitions,
                                       "bindingVersion": KAFKA_BINDING}},
            },
        },
        "operations": {
            "receiveLabIntake": {
                "action": "receive",
                "channel": {"$ref": "#/channels/labIntake"},
                "summary": "Validate, store and answer each intake record.",
                "messages": refs("labIntake", [m.__name__ for m in intake]),
                "bindings": {"kafka": {
                    "groupId": {"type": "string", "enum": ["lab"]},
                    "bindingVersion": KAFKA_BINDING,
                }},
            },
            "sendLabEvents": {
                "action": "send",
                "channel": {"$ref": "#/channels/labEvents"},
                "summary": "Publish the lab's events from the outbox, keyed by order.",
                "messages": refs("labEvents", [m.__name__ for m in events]),
            },
            "sendLabDeadLetters": {
                "action": "send",
                "channel": {"$ref": "#/channels/labDlq"},
                "summary": "Copy an undecodable intake record with its origin.",
                "messages": refs("labDlq", ["DeadLetter"]),
            },
        },
        "components": {"schemas": schemas, "messages": messages},
    }


def render(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = ASYNCAPI_DIR / "lab.yaml"
    text = render(document())
    old = path.read_text("utf-8") if path.exists() else None
    if "--check" in args:
        print("lab.yaml is " + ("up to date" if old == text else "out of date"))
        return 0 if old == text else 1
    ASYNCAPI_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

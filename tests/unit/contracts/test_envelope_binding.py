"""CloudEvents 1.0 Kafka binary binding: encode, decode, refuse, and agree with the SDK."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.v1 import kafka as ce_kafka_v1
from hypothesis import given
from hypothesis import strategies as st
from yigongti_contracts.envelope import (
    REQUIRED_HEADERS,
    Envelope,
    EnvelopeError,
    from_headers,
    new_event_id,
    to_headers,
)
from yigongti_contracts.examples import EXAMPLES

T = datetime(2025, 1, 15, 2, 0, 0, 123456, tzinfo=UTC)


def full_envelope() -> Envelope:
    return Envelope(
        id=new_event_id(),
        source="/services/lab",
        type="yigongti.lab.order.accepted.v1",
        time=T,
        subject="ORD-1",
        aggseq=42,
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        tracestate="rojo=00f067aa0ba902b7",
        extra={"x-terminal-id": "T-0042", "x-nonce": "ab" * 16},
    )


def headers_without(name: str) -> list[tuple[str, bytes | None]]:
    return [(k, v) for k, v in to_headers(full_envelope()) if k != name]


def replace(name: str, value: bytes | None) -> list[tuple[str, bytes | None]]:
    return [(k, value if k == name else v) for k, v in to_headers(full_envelope())]


def test_round_trip_keeps_every_attribute() -> None:
    env = full_envelope()
    assert from_headers(to_headers(env)) == env


def test_minimal_envelope_round_trips_and_sends_no_optional_headers() -> None:
    env = Envelope(id="e1", source="/terminals/T-1", type="t.v1", time=T)
    headers = to_headers(env)
    assert [k for k, _ in headers] == [
        "ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type"
    ]
    assert from_headers(headers) == env


def test_headers_are_the_kafka_binary_binding() -> None:
    headers = dict(to_headers(full_envelope()))
    assert headers["ce_specversion"] == b"1.0"
    assert headers["content-type"] == b"application/json"
    assert headers["ce_time"] == b"2025-01-15T02:00:00.123456Z"
    assert headers["ce_aggseq"] == b"42"
    assert all(isinstance(v, bytes) for v in headers.values())


def test_time_is_stored_in_utc() -> None:
    beijing = timezone(timedelta(hours=8))
    env = Envelope(id="e", source="s", type="t", time=T.astimezone(beijing))
    assert env.time.tzinfo is UTC and env.time == T
    assert dict(to_headers(env))["ce_time"].endswith(b"Z")


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError):
        Envelope(id="e", source="s", type="t", time=datetime(2025, 1, 1))


def test_extra_may_not_shadow_envelope_headers() -> None:
    with pytest.raises(ValueError):
        Envelope(id="e", source="s", type="t", time=T, extra={"ce_id": "x"})


def test_extra_is_read_only() -> None:
    env = full_envelope()
    with pytest.raises(TypeError):
        env.extra["x-nonce"] = "0"  # type: ignore[index]


def test_new_event_ids_are_distinct_uuid4() -> None:
    ids = {new_event_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 36 and i[14] == "4" for i in ids)


@pytest.mark.parametrize("name", REQUIRED_HEADERS)
def test_each_missing_required_header_is_named(name: str) -> None:
    with pytest.raises(EnvelopeError) as err:
        from_headers(headers_without(name))
    assert err.value.code == "missing_header"
    assert err.value.fields == (name,)


def test_all_missing_headers_are_named_together() -> None:
    with pytest.raises(EnvelopeError) as err:
        from_headers([])
    assert err.value.fields == REQUIRED_HEADERS


def test_other_specversion_is_unsupported() -> None:
    with pytest.raises(EnvelopeError) as err:
        from_headers(replace("ce_specversion", b"0.3"))
    assert (err.value.code, err.value.fields) == ("unsupported_specversion", ("ce_specversion",))


@pytest.mark.parametrize("value", [b"application/json", b"application/json; charset=utf-8",
                                   b"Application/JSON;charset=UTF-8"])
def test_json_content_types_are_accepted(value: bytes) -> None:
    assert from_headers(replace("content-type", value)).id


@pytest.mark.parametrize("value", [b"text/plain", b"application/cloudevents+json",
                                   b"application/json; charset=latin-1", b"application/xml"])
def test_other_content_types_are_refused(value: bytes) -> None:
    with pytest.raises(EnvelopeError) as err:
        from_headers(replace("content-type", value))
    assert err.value.code == "bad_content_type"


@pytest.mark.parametrize("value", [
    b"2025-01-15", b"2025-01-15 02:00:00Z", b"2025-01-15T02:00:00", b"2025-13-01T00:00:00Z",
    b"2025-02-30T00:00:00Z", b"yesterday", b"2025-01-15T25:00:00Z", b"",
])
def test_bad_time_is_refused(value: bytes) -> None:
    with pytest.raises(EnvelopeError) as err:
        from_headers(replace("ce_time", value))
    assert (err.value.code, err.value.fields) == ("bad_header", ("ce_time",))


@pytest.mark.parametrize("value,expected", [
    (b"2025-01-15T10:00:00+08:00", datetime(2025, 1, 15, 2, tzinfo=UTC)),
    (b"2025-01-15t02:00:00z", datetime(2025, 1, 15, 2, tzinfo=UTC)),
    (b"2025-01-15T02:00:00.123456789Z", datetime(2025, 1, 15, 2, 0, 0, 123456, tzinfo=UTC)),
    (b"2025-01-15T02:00:00.5Z", datetime(2025, 1, 15, 2, 0, 0, 500000, tzinfo=UTC)),
])
def test_rfc3339_times_decode_to_aware_utc(value: bytes, expected: datetime) -> None:
    env = from_headers(replace("ce_time", value))
    assert env.time == expected and env.time.tzinfo is UTC


@pytest.mark.parametrize("value", [b"-1", b"+1", b"1.0", b"x", b"", b" 1",
                                   b"99999999999999999999", b"9223372036854775808"])
def test_bad_sequence_is_refused(value: bytes) -> None:
    with pytest.raises(EnvelopeError) as err:
        from_headers(replace("ce_aggseq", value))
    assert (err.value.code, err.value.fields) == ("bad_header", ("ce_aggseq",))


def test_sequence_is_optional() -> None:
    assert from_headers(headers_without("ce_aggseq")).aggseq is None


@pytest.mark.parametrize("name", ["ce_id", "ce_source", "ce_type", "ce_subject"])
def test_empty_attributes_are_refused(name: str) -> None:
    with pytest.raises(EnvelopeError) as err:
        from_headers(replace(name, b""))
    assert (err.value.code, err.value.fields) == ("bad_header", (name,))


@pytest.mark.parametrize("name", ["ce_id", "ce_source", "ce_time", "x-nonce", "traceparent"])
def test_non_utf8_values_are_bad_headers(name: str) -> None:
    with pytest.raises(EnvelopeError) as err:
        from_headers(replace(name, b"\xff\xfe\x00"))
    assert (err.value.code, err.value.fields) == ("bad_header", (name,))


def test_null_header_value_is_a_bad_header() -> None:
    with pytest.raises(EnvelopeError) as err:
        from_headers(replace("ce_id", None))
    assert (err.value.code, err.value.fields) == ("bad_header", ("ce_id",))


def test_repeated_header_is_refused() -> None:
    headers = to_headers(full_envelope()) + [("ce_type", b"yigongti.other.v1")]
    with pytest.raises(EnvelopeError) as err:
        from_headers(headers)
    assert (err.value.code, err.value.fields) == ("duplicate_header", ("ce_type",))


def test_header_names_are_case_insensitive() -> None:
    headers = [(k.upper(), v) for k, v in to_headers(full_envelope())]
    assert from_headers(headers).type == "yigongti.lab.order.accepted.v1"


def test_unknown_headers_travel_in_extra() -> None:
    headers = to_headers(full_envelope()) + [("x-dlq-topic", b"lab.intake.v1")]
    assert from_headers(headers).extra["x-dlq-topic"] == "lab.intake.v1"


def test_error_messages_never_hold_values() -> None:
    secret = "11010519491231002X"
    for headers in (replace("ce_time", secret.encode()), replace("ce_aggseq", secret.encode()),
                    replace("content-type", secret.encode()),
                    replace("ce_specversion", secret.encode())):
        with pytest.raises(EnvelopeError) as err:
            from_headers(headers)
        assert secret not in str(err.value) and secret not in repr(err.value.args)


@given(
    id=st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1,
               max_size=40),
    subject=st.none() | st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1,
                                max_size=40),
    aggseq=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
    time=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),
                      timezones=st.just(UTC)),
)
def test_any_envelope_round_trips(id: str, subject: str | None, aggseq: int | None,
                                  time: datetime) -> None:
    env = Envelope(id=id, source="/s", type="t.v1", time=time, subject=subject,
                   aggseq=aggseq)
    assert from_headers(to_headers(env)) == env


# --- the official CloudEvents SDK reads what we write ---------------------------


@pytest.mark.parametrize("model", list(EXAMPLES), ids=lambda m: m.__name__)
def test_official_sdk_decodes_our_records(model: type) -> None:
    event = EXAMPLES[model]
    env = Envelope(id=new_event_id(), source="/services/lab", type=model.CE_TYPE, time=T,
                   subject=event.kafka_key(), aggseq=7,
                   traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    headers = dict(to_headers(env))
    value = event.model_dump_json().encode()
    key = event.kafka_key().encode()

    parsed = ce_kafka.from_binary(
        ce_kafka.KafkaMessage(headers=headers, key=key, value=value), JSONFormat()
    )
    assert parsed.get_specversion() == "1.0"
    assert parsed.get_id() == env.id
    assert parsed.get_source() == env.source
    assert parsed.get_type() == model.CE_TYPE
    assert parsed.get_time() == T
    assert parsed.get_subject() == event.kafka_key()
    assert parsed.get_extension("aggseq") == "7"
    assert parsed.get_datacontenttype() == "application/json"
    assert parsed.get_data() == json.loads(value)

    legacy = ce_kafka_v1.from_binary(
        ce_kafka_v1.KafkaMessage(headers=headers, key=key, value=value)
    )
    assert legacy["id"] == env.id and legacy["source"] == env.source
    assert legacy["type"] == model.CE_TYPE and legacy["subject"] == event.kafka_key()
    assert legacy["aggseq"] == "7"
    assert legacy["time"] == "2025-01-15T02:00:00.123456Z"



def test_per_aggregate_counter_travels_as_our_own_extension_not_the_sequence_extension():
    """The CloudEvents sequence extension is ordered per source and sorts as a
    string; ours counts per aggregate (ce_source, ce_subject) and is a number:
    our own extension `aggseq` (issue 8 item 20)."""
    env = Envelope(id="e1", source="/yigongti/lab", type="t.v1", time=T, subject="ORD-1",
                   aggseq=10)
    headers = dict(to_headers(env))
    assert headers["ce_aggseq"] == b"10"
    assert "ce_sequence" not in headers
    assert from_headers(list(headers.items())).aggseq == 10


@pytest.mark.parametrize("name", ["ce_id", "ce_source", "ce_type", "ce_subject"])
@pytest.mark.parametrize("control", [b"\x00", b"\x1b", b"\n", b"\x7f"])
def test_control_characters_in_attributes_are_refused(name: str, control: bytes) -> None:
    with pytest.raises(EnvelopeError) as err:
        from_headers(replace(name, b"a" + control + b"b"))
    assert (err.value.code, err.value.fields) == ("bad_header", (name,))

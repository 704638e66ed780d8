"""Dead letters: exact copies of records a consumer could not even decode, on
the service's own dead-letter topic (`<service>.dlq.v1`, DESIGN §6).

A copy is stored in the transaction that answers the record (the
`dead_letters` table, migrations/0007) and the relay publishes it after the
commit: a batch that is rolled back and read again stores none, and a record
gets one copy however often Kafka delivers it.

The copy keeps the record's key, value, headers and timestamp, plus `dlq-*`
headers: the error code and detail (field names and codes, never values),
the source topic, partition and offset, the consumer, and when it was seen.
A value too large to be copied whole (the copy's headers would push it past
the producer's request limit) is cut, and `dlq-value-bytes` gives the
original size: `yigongti-dlq replay` then reads the original from the source
topic while the topic still holds it.
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC

import asyncpg
from aiokafka import AIOKafkaProducer, ConsumerRecord
from yigongti_contracts.common import safe_field
from yigongti_contracts.topics import (
    DLQ_AT_HEADER,
    DLQ_CONSUMER_HEADER,
    DLQ_ERROR_DETAIL_HEADER,
    DLQ_ERROR_HEADER,
    DLQ_SOURCE_OFFSET_HEADER,
    DLQ_SOURCE_PARTITION_HEADER,
    DLQ_SOURCE_TOPIC_HEADER,
)

from .telemetry import metrics

log = logging.getLogger(__name__)

DLQ_VALUE_BYTES_HEADER = "dlq-value-bytes"  # the original value's size, when the copy is cut
# Largest value copied whole. The producer refuses a request above 1 MiB
# (max_request_size) and the copy adds headers: what is larger is cut.
COPY_LIMIT = 900 * 1024


def encode_headers(headers) -> list[list[str | None]]:
    """Kafka headers as JSON: names as received, values in base64 (None kept)."""
    return [[name, None if value is None else base64.b64encode(value).decode()]
            for name, value in headers or ()]


def decode_headers(stored) -> list[tuple[str, bytes | None]]:
    return [(name, None if value is None else base64.b64decode(value)) for name, value in stored]


async def store(conn: asyncpg.Connection, record: ConsumerRecord, *, dlq_topic: str,
                error: str, fields: list[tuple[str, str]], consumer: str) -> bool:
    """Keep a copy of `record` for the dead-letter topic; False if it has one already."""
    value = record.value
    size = len(value or b"")
    inserted = await conn.fetchval(
        """INSERT INTO dead_letters (source_topic, source_partition, source_offset, dlq_topic,
               record_key, record_value, value_bytes, headers, record_timestamp, error, detail,
               consumer)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           ON CONFLICT (source_topic, source_partition, source_offset) DO NOTHING
           RETURNING true""",
        record.topic, record.partition, record.offset, dlq_topic, record.key,
        value[:COPY_LIMIT] if value is not None else None, size,
        encode_headers(h for h in (record.headers or ()) if not h[0].startswith("dlq-")),
        record.timestamp, error,
        ",".join(f"{safe_field(f)}:{c}" for f, c in fields)[:1000], consumer,
    )
    return bool(inserted)


def copy_headers(row: asyncpg.Record) -> list[tuple[str, bytes | None]]:
    headers = decode_headers(row["headers"])
    headers += [
        (DLQ_ERROR_HEADER, row["error"].encode()),
        (DLQ_ERROR_DETAIL_HEADER, row["detail"].encode()),
        (DLQ_SOURCE_TOPIC_HEADER, row["source_topic"].encode()),
        (DLQ_SOURCE_PARTITION_HEADER, str(row["source_partition"]).encode()),
        (DLQ_SOURCE_OFFSET_HEADER, str(row["source_offset"]).encode()),
        (DLQ_CONSUMER_HEADER, row["consumer"].encode()),
        (DLQ_AT_HEADER, row["seen_at"].astimezone(UTC).isoformat().encode()),
    ]
    if row["value_bytes"] > len(row["record_value"] or b""):
        headers.append((DLQ_VALUE_BYTES_HEADER, str(row["value_bytes"]).encode()))
    return headers


async def publish(conn: asyncpg.Connection, producer: AIOKafkaProducer, *,
                  physical_topic, record_errors: tuple[type[BaseException], ...],
                  limit: int = 100) -> int:
    """Send stored copies not sent yet (the relay, after its outbox batch);
    how many were handled. A copy the broker refuses for good is set aside."""
    rows = await conn.fetch(
        """SELECT * FROM dead_letters WHERE sent_at IS NULL AND refused_at IS NULL
           ORDER BY seq LIMIT $1""", limit)
    if not rows:
        return 0
    sent, refused = [], []
    for row in rows:
        try:
            await producer.send_and_wait(
                physical_topic(row["dlq_topic"]), value=row["record_value"],
                key=row["record_key"], headers=copy_headers(row),
                # The original's timestamp travels with it.
                timestamp_ms=row["record_timestamp"])
            sent.append(row["seq"])
            metrics().dead_lettered.add(1, {"error": row["error"]})
        except record_errors as exc:
            refused.append((row["seq"], type(exc).__name__))
            log.error("dead letter of %s-%d@%d refused by the broker: %s", row["source_topic"],
                      row["source_partition"], row["source_offset"], type(exc).__name__)
    await conn.execute("UPDATE dead_letters SET sent_at = now() WHERE seq = ANY($1::bigint[])",
                       sent)
    for seq, error in refused:
        await conn.execute(
            "UPDATE dead_letters SET refused_at = now(), refused_error = $2 WHERE seq = $1",
            seq, error)
    return len(rows)

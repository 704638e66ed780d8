"""Inspect and replay a service's dead letters.

    yigongti-dlq list   --service lab [--limit 50]
    yigongti-dlq replay --service lab --offset 12 [--offset 0:13 ...]
    yigongti-dlq replay --service lab --all
    yigongti-dlq unverified --service lab [--limit 50]

A dead letter keeps the original key, value, headers and timestamp plus
`dlq-*` headers (the error, source topic, partition and offset: see
dead_letters.py). Output shows no payloads: they may hold personal data.

Replay hands the original back to the service that dead-lettered it, and to
it alone, once the cause is fixed (a consumer that now knows a new type, a
handler bug deployed): it runs the record through the service's own path
(decoding, the sender's signature, the inbox, the handler) in this process,
with the service's environment: DATABASE_URL and DB_SCHEMA as well as the
Kafka settings. Nothing is produced onto the intake topic, which terminals
write, nor onto another service's events topic, which only its owner writes.

Its authority is the service's own `dead_letters` row for those source
coordinates, which only the service writes and a sender cannot forge: a
signed intake record is judged fresh against the time the service first
saw it (that row's `seen_at`), so a dead letter replayed hours later passes
while the same record sent again by its terminal is still refused as stale.
A copy cut for size (`dlq-value-bytes`) is replayed from the source topic,
read at its coordinates, while the topic still holds it.

`unverified` lists intake records whose sender was not verified (bad or
missing signature, unknown terminal, stale time…): they get no answer and no
dead letter, and are kept, without their payload, so ops can help a real
terminal whose signing is broken (its id, the reason, when).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker, TopicPartition
from faststream.kafka.message import KafkaAckableMessage
from yigongti_contracts.topics import topic_name

from .db import create_pool
from .dead_letters import DLQ_VALUE_BYTES_HEADER
from .settings import KitSettings, kafka_client_kwargs


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None = None  # the original record's (dead letters keep it)

    def header(self, name: str) -> str:
        for k, v in self.headers:
            if k == name and v is not None:
                return v.decode(errors="replace")
        return ""

    def original_headers(self) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in self.headers if not k.startswith("dlq-")]

    @property
    def source(self) -> tuple[str, int, int]:
        return (self.header("dlq-source-topic"), int(self.header("dlq-source-partition")),
                int(self.header("dlq-source-offset")))

    @property
    def cut(self) -> bool:
        """The copy's value was cut for size: the original is on the source topic."""
        return bool(self.header(DLQ_VALUE_BYTES_HEADER))


def _one(record: ConsumerRecord) -> KafkaAckableMessage:
    return KafkaAckableMessage(raw_message=record, body=record, consumer=None,
                               message_id=f"{record.topic}-{record.partition}@{record.offset}")


def _record(message: KafkaAckableMessage) -> ConsumerRecord:
    return message.raw_message


async def _read(settings: KitSettings, topic: str, partition: int, start: int | None,
                until: int | None = None) -> list[ConsumerRecord]:
    """Records of one partition from `start` (None: the beginning) to `until`
    (None: the end now), read by a FastStream subscriber of its own, assigned
    by hand (no consumer group)."""
    kwargs = kafka_client_kwargs(settings, "consumer")
    broker = KafkaBroker(kwargs["bootstrap_servers"], consumer_only=True, logger=None,
                         client_id=kwargs["client_id"])
    tp = TopicPartition(topic, partition)
    sub = broker.subscriber(partitions=[tp], auto_offset_reset="earliest", parser=_one,
                            decoder=_record)
    await broker.start()
    try:
        consumer = sub.consumer
        [assigned] = consumer.assignment()
        first = (await consumer.beginning_offsets([assigned]))[assigned]
        end = (await consumer.end_offsets([assigned]))[assigned]
        if until is not None:
            end = min(end, until)
        if start is not None:
            if start < first:
                return []  # gone: the topic no longer holds it
            consumer.seek(assigned, start)
        records: list[ConsumerRecord] = []
        while await consumer.position(assigned) < end:
            message = await sub.get_one(timeout=2.0)
            if message is None:
                break
            if message.raw_message.offset < end:
                records.append(message.raw_message)
        return records
    finally:
        await broker.stop()


async def read_dead_letters(settings: KitSettings, service: str) -> list[DeadLetter]:
    """Everything on the service's dead-letter topic now, oldest first.
    (Dead letters are sent one at a time, so the embedded broker's end offset,
    which lags after batched sends, is exact here.)"""
    topic = topic_name(f"{service}.dlq.v1", settings.topic_prefix)
    records = await _read(settings, topic, 0, None)
    return [DeadLetter(r.partition, r.offset, r.key, r.value, tuple(r.headers or ()),
                       r.timestamp) for r in records]


async def read_original(settings: KitSettings, topic: str, partition: int,
                        offset: int) -> ConsumerRecord | None:
    """The record at these coordinates, or None when the topic no longer holds it."""
    records = await _read(settings, topic, partition, offset, offset + 1)
    return records[0] if records else None


async def replay(settings: KitSettings, spec, letters: list[DeadLetter]) -> list[str]:
    """Run each dead letter's original through the service's own path; the
    outcome of each ("applied", a reason code, or why it was not replayed)."""
    from .service import intake_consumer, subscription_consumers  # the runtime's pieces

    pool = await create_pool(settings.database_url, settings.db_schema, max_size=2)
    try:
        intake = intake_consumer(spec, settings, pool)
        readers = {r.topic: r for r in subscription_consumers(spec, settings, pool).values()}
        outcomes = []
        for letter in letters:
            outcomes.append(await _replay_one(settings, pool, intake, readers, letter))
        return outcomes
    finally:
        await pool.close()


async def _replay_one(settings, pool, intake, readers, letter: DeadLetter) -> str:
    topic, partition, offset = letter.source
    if letter.cut:
        record = await read_original(settings, topic, partition, offset)
        if record is None:
            return "original_gone"
    else:
        record = ConsumerRecord(
            topic=topic, partition=partition, offset=offset, timestamp=letter.timestamp_ms,
            timestamp_type=0, key=letter.key, value=letter.value, checksum=None,
            serialized_key_size=-1, serialized_value_size=-1,
            headers=tuple(letter.original_headers()))
    async with pool.acquire() as conn, conn.transaction():
        seen_at = await conn.fetchval(
            """SELECT seen_at FROM dead_letters WHERE source_topic = $1
                 AND source_partition = $2 AND source_offset = $3 FOR UPDATE""",
            topic, partition, offset)
        if seen_at is None:
            return "not_this_services_dead_letter"
        if topic == intake.topic:
            outcome = await intake.process(conn, record, seen_at=seen_at)
        elif topic in readers:
            outcome = await readers[topic].process(conn, record)
        else:
            return "unknown_source_topic"
        await conn.execute(
            """UPDATE dead_letters SET replayed_at = now(), replay_outcome = $4
               WHERE source_topic = $1 AND source_partition = $2 AND source_offset = $3""",
            topic, partition, offset, outcome)
    return outcome


def _describe(d: DeadLetter) -> str:
    return (f"{d.partition}:{d.offset}\t{d.header('dlq-error')}\t{d.header('dlq-error-detail')}\t"
            f"{d.header('dlq-source-topic')}[{d.header('dlq-source-partition')}]"
            f"@{d.header('dlq-source-offset')}\t{d.header('ce_type') or '-'}\t"
            f"{len(d.value or b'')}B{' (cut from ' + d.header(DLQ_VALUE_BYTES_HEADER) + 'B)' if d.cut else ''}"
            f"\t{d.header('dlq-at')}")


async def list_unverified(settings: KitSettings, limit: int = 50) -> list[dict]:
    pool = await create_pool(settings.database_url, settings.db_schema, max_size=1)
    try:
        rows = await pool.fetch(
            "SELECT * FROM unverified_intake ORDER BY id DESC LIMIT $1", limit)
    finally:
        await pool.close()
    return [{"at": r["seen_at"].isoformat(), "reason": r["reason"],
             "terminal": r["claimed_terminal"] or "-",
             "coordinates": f"{r['topic']}[{r['kafka_partition']}]@{r['kafka_offset']}"}
            for r in reversed(rows)]


async def _main(args: argparse.Namespace) -> int:
    settings = KitSettings(service_name=args.service)
    if args.command == "unverified":
        print("at\treason\tclaimed terminal\tcoordinates")
        for row in await list_unverified(settings, args.limit):
            print("\t".join(row.values()))
        return 0
    letters = await read_dead_letters(settings, args.service)
    if args.command == "list":
        print("partition:offset\terror\tdetail\tsource\tce_type\tsize\tat")
        # One line per source coordinates: a relay that crashed before marking
        # a copy sent may have published it twice.
        seen: set[tuple[str, str, str]] = set()
        for d in letters[-args.limit:]:
            coordinates = (d.header("dlq-source-topic"), d.header("dlq-source-partition"),
                           d.header("dlq-source-offset"))
            if coordinates not in seen:
                seen.add(coordinates)
                print(_describe(d))
        return 0
    wanted = set(args.offset)
    chosen = letters if args.all else [
        d for d in letters if f"{d.partition}:{d.offset}" in wanted
        or (d.partition == 0 and str(d.offset) in wanted)
    ]
    if not chosen:
        print("nothing to replay", file=sys.stderr)
        return 1
    from .service import load_spec

    spec = load_spec(args.service, args.spec)
    for letter, outcome in zip(chosen, await replay(settings, spec, chosen), strict=True):
        print(f"{letter.partition}:{letter.offset}\t{outcome}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yigongti-dlq", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list dead letters (no payloads)")
    ls.add_argument("--service", required=True)
    ls.add_argument("--limit", type=int, default=50)
    rp = sub.add_parser("replay", help="hand dead letters back to the service that refused them")
    rp.add_argument("--service", required=True)
    group = rp.add_mutually_exclusive_group(required=True)
    group.add_argument("--offset", action="append", default=[],
                       help="partition:offset (or offset, partition 0), repeatable")
    group.add_argument("--all", action="store_true")
    rp.add_argument("--spec", help="module:function giving the ServiceSpec (default: the "
                    "service's installed entry point)")
    uv = sub.add_parser("unverified", help="intake from senders not verified (no payloads)")
    uv.add_argument("--service", required=True)
    uv.add_argument("--limit", type=int, default=50)
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())

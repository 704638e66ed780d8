"""Inspect and replay a service's dead letters.

    yigongti-dlq list   --service lab [--limit 50]
    yigongti-dlq replay --service lab --offset 12 [--offset 13 ...]
    yigongti-dlq replay --service lab --all

A dead letter keeps the original value and headers plus `dlq-*` headers (the
error, source topic, partition, offset). Replay sends the original back to its
source topic, marked with `x-replayed-from`, for records whose cause has been
fixed (e.g. a consumer that now knows a new event type). Output shows no
payloads: they may hold personal data.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from yigongti_contracts.topics import topic_name

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


async def read_dead_letters(settings: KitSettings, service: str) -> list[DeadLetter]:
    """Everything on the dead-letter topic now, oldest first (no consumer group)."""
    topic = topic_name(f"{service}.dlq.v1", settings.topic_prefix)
    kwargs = {**kafka_client_kwargs(settings, "consumer"), "group_id": None,
              "enable_auto_commit": False}
    consumer = AIOKafkaConsumer(**kwargs)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()  # first use of the topic
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        letters: list[DeadLetter] = []
        remaining = {tp for tp in tps if end[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < end[tp]:
                        letters.append(DeadLetter(r.partition, r.offset, r.key, r.value,
                                                  tuple(r.headers or ()), r.timestamp))
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        letters.sort(key=lambda d: (d.partition, d.offset))
        return letters
    finally:
        await consumer.stop()


async def replay(settings: KitSettings, letters: list[DeadLetter]) -> int:
    producer = AIOKafkaProducer(**kafka_client_kwargs(settings, "producer"))
    await producer.start()
    try:
        for d in letters:
            headers = [h for h in d.original_headers() if h[0] != "x-replayed-from"]
            headers.append(("x-replayed-from", f"{d.partition}:{d.offset}".encode()))
            # With the original's timestamp: a signed record is judged fresh or
            # stale by it (topics with CreateTime; a LogAppendTime topic stamps
            # the replay anew, and a record older than INTAKE_MAX_SKEW_S is then
            # refused as stale: its terminal must send it again).
            await producer.send_and_wait(d.header("dlq-source-topic"), value=d.value, key=d.key,
                                         headers=headers, timestamp_ms=d.timestamp_ms)
        return len(letters)
    finally:
        await producer.stop()


def _describe(d: DeadLetter) -> str:
    return (f"{d.partition}:{d.offset}\t{d.header('dlq-error')}\t{d.header('dlq-error-detail')}\t"
            f"{d.header('dlq-source-topic')}[{d.header('dlq-source-partition')}]"
            f"@{d.header('dlq-source-offset')}\t{d.header('ce_type') or '-'}\t"
            f"{len(d.value or b'')}B\t{d.header('dlq-at')}")


async def _main(args: argparse.Namespace) -> int:
    settings = KitSettings()
    letters = await read_dead_letters(settings, args.service)
    if args.command == "list":
        print("partition:offset\terror\tdetail\tsource\tce_type\tsize\tat")
        for d in letters[-args.limit:]:
            print(_describe(d))
        return 0
    chosen = letters if args.all else [
        d for d in letters if f"{d.partition}:{d.offset}" in set(args.offset)
        or (d.partition == 0 and str(d.offset) in set(args.offset))
    ]
    if not chosen:
        print("nothing to replay", file=sys.stderr)
        return 1
    n = await replay(settings, chosen)
    print(f"replayed {n} record(s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yigongti-dlq", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list dead letters (no payloads)")
    ls.add_argument("--service", required=True)
    ls.add_argument("--limit", type=int, default=50)
    rp = sub.add_parser("replay", help="send dead letters back to their source topic")
    rp.add_argument("--service", required=True)
    group = rp.add_mutually_exclusive_group(required=True)
    group.add_argument("--offset", action="append", default=[],
                       help="partition:offset (or offset, partition 0), repeatable")
    group.add_argument("--all", action="store_true")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())

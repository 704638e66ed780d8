"""List and resend outbox rows the broker refused for good (too large,
malformed), which the relay set aside so the events behind them could go on.

    yigongti-outbox list   --service lab
    yigongti-outbox resend --service lab --id <ce_id> [--id …] [--no-wait]

Run it with the service's environment, after the cause is removed (for a
record too large: KAFKA_MAX_REQUEST_BYTES and the topic's max.message.bytes
raised, the service restarted). `resend` refuses a row that would still be
too large, else hands it back to the relay, which publishes it with its own
ce_id (a consumer that saw it before treats it as a duplicate) and the
aggregate's next `ce_aggseq`: the number it was first given stays a gap, so
a consumer sees the event late rather than not at all. It waits for the
publish and prints the aggseq the event carries. Output has ids and codes,
never payloads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid

from .db import create_pool
from .settings import KitSettings

# What a record adds to its payload on the wire: key, CloudEvents headers,
# trace context (a bound, not an exact count).
HEADER_ALLOWANCE = 1024


async def list_refused(settings: KitSettings) -> list[dict]:
    pool = await create_pool(settings.database_url, settings.db_schema, max_size=1)
    try:
        rows = await pool.fetch(
            """SELECT id, type, aggregatetype, aggregateid, refused_error, refused_at,
                      octet_length(payload::text) AS size
               FROM outbox WHERE refused_at IS NOT NULL AND sent_at IS NULL ORDER BY seq""")
    finally:
        await pool.close()
    return [{"ce_id": str(r["id"]), "type": r["type"],
             "aggregate": f"{r['aggregatetype']}:{r['aggregateid']}",
             "error": r["refused_error"], "bytes": r["size"],
             "refused_at": r["refused_at"].isoformat()} for r in rows]


async def resend(settings: KitSettings, ce_ids: list[str], *, wait_s: float = 0.0
                 ) -> dict[str, str]:
    """Hand refused rows back to the relay; each ce_id's outcome ("queued",
    "sent with aggseq N" when waited for, "still_too_large …", "not_refused")."""
    pool = await create_pool(settings.database_url, settings.db_schema, max_size=1)
    limit = settings.kafka_max_request_bytes
    outcomes: dict[str, str] = {}
    try:
        for ce_id in ce_ids:
            try:
                row_id = uuid.UUID(ce_id)
            except ValueError:
                outcomes[ce_id] = "not_a_ce_id"
                continue
            async with pool.acquire() as conn, conn.transaction():
                size = await conn.fetchval(
                    """SELECT octet_length(payload::text) FROM outbox
                       WHERE id = $1 AND refused_at IS NOT NULL AND sent_at IS NULL
                       FOR UPDATE""", row_id)
                if size is None:
                    outcomes[ce_id] = "not_refused"
                    continue
                if size + HEADER_ALLOWANCE > limit:
                    outcomes[ce_id] = (f"still_too_large ({size} bytes and headers over "
                                       f"KAFKA_MAX_REQUEST_BYTES={limit})")
                    continue
                await conn.execute(
                    "UPDATE outbox SET refused_at = NULL, refused_error = NULL WHERE id = $1",
                    row_id)
                outcomes[ce_id] = "queued"
        deadline = time.monotonic() + wait_s
        while wait_s and time.monotonic() < deadline and any(
                o == "queued" for o in outcomes.values()):
            for ce_id, outcome in outcomes.items():
                if outcome != "queued":
                    continue
                row = await pool.fetchrow(
                    "SELECT sent_at, sequence, refused_error FROM outbox WHERE id = $1",
                    uuid.UUID(ce_id))
                if row["sent_at"] is not None:
                    outcomes[ce_id] = f"sent with aggseq {row['sequence']}"
                elif row["refused_error"] is not None:
                    outcomes[ce_id] = f"refused again: {row['refused_error']}"
            await asyncio.sleep(0.2)
    finally:
        await pool.close()
    return outcomes


async def _main(args: argparse.Namespace) -> int:
    settings = KitSettings(service_name=args.service)
    if args.command == "list":
        for row in await list_refused(settings):
            print(json.dumps(row, ensure_ascii=False))
        return 0
    outcomes = await resend(settings, args.id, wait_s=0.0 if args.no_wait else 30.0)
    for ce_id, outcome in outcomes.items():
        print(f"{ce_id}\t{outcome}")
    return 0 if all(o.startswith(("queued", "sent")) for o in outcomes.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yigongti-outbox", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="rows the broker refused, not resent (no payloads)")
    ls.add_argument("--service", required=True)
    rs = sub.add_parser("resend", help="hand refused rows back to the relay")
    rs.add_argument("--service", required=True)
    rs.add_argument("--id", action="append", required=True, help="ce_id of the row; repeatable")
    rs.add_argument("--no-wait", action="store_true", help="do not wait for the publish")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

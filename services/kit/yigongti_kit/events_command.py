"""List and re-apply the events of other services a service holds (parked
waiting for a prerequisite, or unapplied with a reason: subscriptions.py).

    yigongti-events list    --service referral [--status unapplied] [--limit 50]
    yigongti-events reapply --service referral --id 12 [--id 13 …]
    yigongti-events reapply --service referral --reason processing_error

Run it with the service's environment (DATABASE_URL, DB_SCHEMA, TOPIC_PREFIX),
after the cause is fixed (a handler bug deployed, a missing reference loaded).
`reapply` runs each held record through the service's own subscription path
(the same decoding, owner check, inbox and handler), one transaction each; a
record that fails again stays held with its new reason. Output shows ids,
coordinates and codes, never payloads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from .db import create_pool
from .service import load_spec, subscription_consumers
from .settings import KitSettings
from .subscriptions import describe


async def reapply(settings: KitSettings, spec, *, ids: list[int] | None = None,
                  reason: str | None = None) -> list[tuple[int, str]]:
    """Re-apply held events (by id, or every unapplied one with `reason`); each
    id with its new outcome."""
    pool = await create_pool(settings.database_url, settings.db_schema)
    try:
        by_owner = subscription_consumers(spec, settings, pool)
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT id FROM held_events
                   WHERE status <> 'reapplied'
                     AND (id = ANY($1::bigint[]) OR (status = 'unapplied' AND reason = $2))
                   ORDER BY id""", ids or [], reason)
        results = []
        for (held_id,) in rows:
            async with pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "SELECT * FROM held_events WHERE id = $1 FOR UPDATE", held_id)
                reader = by_owner.get(row["subscription"])
                if reader is None:
                    results.append((held_id, "no_subscription"))
                    continue
                results.append((held_id, await reader.reapply(conn, row)))
        return results
    finally:
        await pool.close()


async def _main(args: argparse.Namespace) -> int:
    settings = KitSettings(service_name=args.service)
    if args.command == "list":
        pool = await create_pool(settings.database_url, settings.db_schema, max_size=1)
        try:
            rows = await pool.fetch(
                """SELECT * FROM held_events WHERE ($1::text IS NULL OR status = $1)
                   ORDER BY id DESC LIMIT $2""", args.status, args.limit)
        finally:
            await pool.close()
        for row in reversed(rows):
            print(json.dumps(describe(row), ensure_ascii=False))
        return 0
    if not args.id and not args.reason:
        print("give --id or --reason", file=sys.stderr)
        return 2
    spec = load_spec(args.service, args.spec)
    for held_id, outcome in await reapply(settings, spec, ids=args.id, reason=args.reason):
        print(f"{held_id}\t{outcome}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yigongti-events", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list held events (no payloads)")
    ls.add_argument("--service", required=True)
    ls.add_argument("--status", choices=("parked", "unapplied", "reapplied"))
    ls.add_argument("--limit", type=int, default=50)
    rp = sub.add_parser("reapply", help="run held events through the service again")
    rp.add_argument("--service", required=True)
    rp.add_argument("--id", type=int, action="append", default=[])
    rp.add_argument("--reason", help="every unapplied event held with this reason code")
    rp.add_argument("--spec", help="module:function giving the ServiceSpec (default: the "
                    "service's installed entry point)")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())

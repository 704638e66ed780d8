"""Numbered SQL migrations (`NNNN_name.sql`), applied once each, in order.

The kit's own tables are component "kit"; each service adds its own
component. Everything lands in the service's schema.
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import asyncpg

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK = 0x79676D69  # "ygmi": one migrator at a time per database


def kit_migrations() -> Path:
    return Path(str(files("yigongti_kit") / "migrations"))


def migration_files(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    found.sort()
    versions = [v for v, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration numbers in {directory}")
    return found


async def migrate(
    conn: asyncpg.Connection, schema: str, components: list[tuple[str, Path]]
) -> list[str]:
    """Create `schema` if needed and apply what is missing; returns what ran."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK)
    try:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}"')
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   component text NOT NULL,
                   version   integer NOT NULL,
                   name      text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (component, version))"""
        )
        for component, directory in components:
            done = {
                r["version"]
                for r in await conn.fetch(
                    "SELECT version FROM schema_migrations WHERE component = $1", component
                )
            }
            for version, path in migration_files(directory):
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(
                        "INSERT INTO schema_migrations (component, version, name) VALUES ($1, $2, $3)",
                        component,
                        version,
                        path.name,
                    )
                applied.append(f"{component}/{path.name}")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)
    return applied

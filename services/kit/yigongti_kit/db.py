"""Connection pools: every connection works inside the service's own schema."""

from __future__ import annotations

import json

import asyncpg

# Errors that mean "the database is not there right now": retried with backoff
# for as long as they last, never dead-lettered (DESIGN §6).
INFRA_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable (ConnectionError is a subclass)
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # connection closed under us
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


def is_infra_error(exc: BaseException) -> bool:
    return isinstance(exc, INFRA_ERRORS)


async def init_connection(conn: asyncpg.Connection) -> None:
    for pg_type in ("json", "jsonb"):
        await conn.set_type_codec(
            pg_type, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def create_pool(
    database_url: str, schema: str, *, min_size: int = 1, max_size: int = 10
) -> asyncpg.Pool:
    """A pool whose connections see `schema` first; SQL stays unqualified."""
    return await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        server_settings={"search_path": schema, "application_name": schema},
        command_timeout=30,
    )


async def connect(database_url: str, schema: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(
        database_url, server_settings={"search_path": schema, "application_name": schema}
    )
    await init_connection(conn)
    return conn

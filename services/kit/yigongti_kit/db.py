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


def is_transient_error(exc: BaseException) -> bool:
    """A deadlock or serialization failure (SQLSTATE class 40): the transaction
    lost to a concurrent one and succeeds when run again."""
    return isinstance(exc, asyncpg.TransactionRollbackError)


async def init_connection(conn: asyncpg.Connection) -> None:
    for pg_type in ("json", "jsonb"):
        await conn.set_type_codec(
            pg_type, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without asyncpg's reset query (advisory unlock, CLOSE ALL,
    UNLISTEN, RESET ALL): a round trip per release, and pooled connections
    never take session locks, LISTEN or SET (the relay and migrations use
    connections of their own). asyncpg still rolls back an open transaction."""


async def create_pool(
    database_url: str, schema: str, *, min_size: int = 1, max_size: int = 16
) -> asyncpg.Pool:
    """A pool whose connections see `schema` first; SQL stays unqualified."""
    return await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        reset=_keep_session,
        server_settings={"search_path": schema, "application_name": schema},
        command_timeout=30,
    )


async def connect(database_url: str, schema: str, *, custom_plans: bool = False
                  ) -> asyncpg.Connection:
    """A connection of its own. `custom_plans`: plan every execution with its
    parameters and the table's current size. A long-lived connection otherwise
    keeps the generic plan it made while its tables were young (the relay's
    "UPDATE outbox … WHERE seq = ANY($1)" stayed a sequential scan of the whole
    outbox, 11 ms a batch, until an ANALYZE happened to invalidate it)."""
    settings = {"search_path": schema, "application_name": schema}
    if custom_plans:
        settings["plan_cache_mode"] = "force_custom_plan"
        settings["enable_bitmapscan"] = "off"
    conn = await asyncpg.connect(database_url, server_settings=settings)
    await init_connection(conn)
    return conn

"""Connection pools: every connection works inside the service's own schema.

TLS: KitSettings puts DB_SSLMODE, DB_SSLROOTCERT, DB_SSLCERT and DB_SSLKEY into
DATABASE_URL's query; asyncpg reads them there, as libpq would, at every new
connection (a renewed client certificate is picked up without a restart).
Production runs verify-full (tests/unit/kit/test_db_tls.py shows what it refuses)."""

from __future__ import annotations

import json

import asyncpg

# How a database fault is handled, by SQLSTATE (the one table; DESIGN §6):
#   infrastructure  the database is not there, or cannot take writes, right now:
#                   waited out with backoff for as long as it lasts, never dead-lettered
#   transient       lost to a concurrent transaction: run again at once
#   timeout         statement_timeout: infrastructure for a few tries, then the
#                   record's own fault (one that always times out must not stop its
#                   partition for ever; batches.py counts the tries)
#   authentication  a rotated password: retried for DB_AUTH_RETRY_S, then liveness
#                   fails so the pod restarts and reads the new Secret
# Anything else is the handler's own fault (a bug, a constraint it broke).
_BY_SQLSTATE: tuple[tuple[str, str], ...] = (
    ("08", "infrastructure"),  # connection exception
    ("53", "infrastructure"),  # insufficient resources: disk full, out of memory, connections
    ("58", "infrastructure"),  # system error (I/O)
    ("57P01", "infrastructure"),  # admin shutdown
    ("57P02", "infrastructure"),  # crash shutdown
    ("57P03", "infrastructure"),  # cannot connect now (starting up, recovering)
    ("25006", "infrastructure"),  # read-only transaction: a standby after failover
    ("40001", "transient"),  # serialization failure
    ("40P01", "transient"),  # deadlock detected
    ("57014", "timeout"),  # query canceled: statement_timeout
    ("28", "authentication"),  # invalid authorization: password, role
)

# Faults below SQL: the connection itself.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable (ConnectionError is a subclass)
    TimeoutError,
    asyncpg.InterfaceError,  # connection closed under us
    # "another operation is in progress": the server ended the session while a
    # query was in flight (failover, restart, pg_terminate_backend).
    asyncpg.InternalClientError,
)


def fault_kind(exc: BaseException) -> str | None:
    """infrastructure, transient, timeout, authentication, or None (the handler's own)."""
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        for prefix, kind in _BY_SQLSTATE:
            if sqlstate.startswith(prefix):
                return kind
        return None
    if isinstance(exc, _CONNECTION_ERRORS):
        return "infrastructure"
    return None


def is_infra_error(exc: BaseException) -> bool:
    """The database is away (or an authentication is failing): wait, never dead-letter."""
    return fault_kind(exc) in ("infrastructure", "authentication")


def is_transient_error(exc: BaseException) -> bool:
    """A deadlock or serialization failure (SQLSTATE class 40): the transaction
    lost to a concurrent one and succeeds when run again."""
    return fault_kind(exc) == "transient"


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

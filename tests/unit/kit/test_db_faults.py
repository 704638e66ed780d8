"""Database faults classified by SQLSTATE, in one table (kit/db.py; issue 8
item 3): infrastructure faults are waited out, never dead-lettered."""

from __future__ import annotations

import asyncpg
import pytest
from yigongti_kit.db import fault_kind


@pytest.mark.parametrize("error, kind", [
    (asyncpg.ReadOnlySQLTransactionError, "infrastructure"),  # 25006: a standby after failover
    (asyncpg.DiskFullError, "infrastructure"),  # 53100
    (asyncpg.TooManyConnectionsError, "infrastructure"),  # 53300
    (asyncpg.OutOfMemoryError, "infrastructure"),  # 53200
    (asyncpg.AdminShutdownError, "infrastructure"),  # 57P01
    (asyncpg.CrashShutdownError, "infrastructure"),  # 57P02
    (asyncpg.CannotConnectNowError, "infrastructure"),  # 57P03
    (asyncpg.ConnectionFailureError, "infrastructure"),  # 08006
    (asyncpg.exceptions.PostgresIOError, "infrastructure"),  # 58030
    (asyncpg.SerializationError, "transient"),  # 40001
    (asyncpg.DeadlockDetectedError, "transient"),  # 40P01
    (asyncpg.QueryCanceledError, "timeout"),  # 57014 statement_timeout
    (asyncpg.InvalidPasswordError, "authentication"),  # 28P01
    (asyncpg.InvalidAuthorizationSpecificationError, "authentication"),  # 28000
    (asyncpg.UniqueViolationError, None),  # a handler's own fault
    (asyncpg.NotNullViolationError, None),
])
def test_each_sqlstate_class_has_one_kind(error, kind):
    assert fault_kind(error("x")) == kind


@pytest.mark.parametrize("exc", [
    ConnectionResetError(), TimeoutError(), OSError(),
    asyncpg.InterfaceError("connection is closed"),
    # "another operation is in progress": a session ended under the pool (issue 8 item 12)
    asyncpg.InternalClientError("another operation is in progress"),
])
def test_connection_level_faults_are_infrastructure(exc):
    assert fault_kind(exc) == "infrastructure"


def test_a_bug_is_no_fault_of_the_infrastructure():
    assert fault_kind(ValueError("x")) is None
    assert fault_kind(KeyError("x")) is None

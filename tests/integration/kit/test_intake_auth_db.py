"""Terminal registry and nonces against the real PostgreSQL.

Each test gets its own schema in the harness's database (search_path set,
the kit's 0002 migration run, dropped afterwards).
"""

import base64
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import yaml
from yigongti_kit.intake_auth import (
    TerminalSigner,
    authenticate_record,
    check_and_store_nonce,
    get_terminal,
    load_terminals,
    prune_nonces,
    terminal_key,
)
from yigongti_kit.migrations import kit_migrations, migrate

MIGRATION = Path(__file__).parents[3] / "services/kit/yigongti_kit/migrations/0002_intake_auth.sql"


@pytest.fixture
async def conn(database_url):
    schema = f"t_intake_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(f'CREATE SCHEMA "{schema}"')
        await connection.execute(f'SET search_path TO "{schema}"')
        await connection.execute(MIGRATION.read_text())
        yield connection
    finally:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await connection.close()


def write_terminals(path, entries):
    path.write_text(yaml.safe_dump(entries))
    return path


T1 = TerminalSigner.generate("T-001")
T2 = TerminalSigner.generate("T-002")
NOW = datetime.now(UTC).replace(microsecond=0)


def signed_record(signer, value=b'{"order_id":"O-1"}', at=NOW, nonce=None):
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", str(uuid.uuid4()).encode()),
        ("ce_source", signer.source.encode()),
        ("ce_type", b"yigongti.lab.order.placed.v1"),
        ("ce_time", at.isoformat().replace("+00:00", "Z").encode()),
    ]
    return signer.sign(headers, value, nonce=nonce), value


async def test_terminals_file_is_upserted(conn, tmp_path):
    path = write_terminals(
        tmp_path / "terminals.yaml",
        [T1.registry_entry("CJ-VC-001"), T2.registry_entry("CJ-VC-002")],
    )
    assert await load_terminals(conn, path) == 2
    assert (await get_terminal(conn, "T-002")).institution_id == "CJ-VC-002"
    key = await terminal_key(conn, "T-001")
    assert base64.b64encode(key.public_bytes_raw()).decode() == T1.public_key_b64

    rotated = TerminalSigner.generate("T-001")
    entry = rotated.registry_entry("CJ-VC-009")
    write_terminals(path, [entry, {**T2.registry_entry("CJ-VC-002"), "active": False}])
    assert await load_terminals(conn, path) == 2
    terminal = await get_terminal(conn, "T-001")
    assert (terminal.institution_id, terminal.public_key) == ("CJ-VC-009", rotated.public_key_b64)
    assert await terminal_key(conn, "T-002") is None  # withdrawn
    assert await terminal_key(conn, "T-404") is None  # never registered


async def test_a_terminal_missing_from_the_file_is_revoked(conn, tmp_path):
    """The terminals file is authoritative (issue 15 item 2): a terminal taken
    out of it can no longer sign, though its row stays for the record."""
    path = write_terminals(tmp_path / "terminals.yaml",
                           [T1.registry_entry("CJ-VC-001"), T2.registry_entry("CJ-VC-002")])
    await load_terminals(conn, path)
    write_terminals(path, [T1.registry_entry("CJ-VC-001")])
    await load_terminals(conn, path)
    assert await terminal_key(conn, "T-002") is None
    assert (await get_terminal(conn, "T-002")).active is False
    assert await terminal_key(conn, "T-001") is not None
    # Back in the file: active again.
    write_terminals(path, [T1.registry_entry("CJ-VC-001"), T2.registry_entry("CJ-VC-002")])
    await load_terminals(conn, path)
    assert await terminal_key(conn, "T-002") is not None


async def test_bad_key_in_terminals_file_writes_nothing(conn, tmp_path):
    path = write_terminals(
        tmp_path / "terminals.yaml",
        [
            T1.registry_entry("CJ-VC-001"),
            {"terminal_id": "T-X", "institution_id": "I", "public_key": "nope"},
        ],
    )
    with pytest.raises(ValueError, match="T-X"):
        await load_terminals(conn, path)
    assert await conn.fetchval("SELECT count(*) FROM terminals") == 0


async def test_a_nonce_is_accepted_once_per_terminal(conn):
    nonce = "ab" * 16
    assert await check_and_store_nonce(conn, "T-001", nonce, NOW) is True
    assert await check_and_store_nonce(conn, "T-001", nonce, NOW) is False
    assert await check_and_store_nonce(conn, "T-002", nonce, NOW) is True


async def test_old_nonces_are_pruned(conn):
    await check_and_store_nonce(conn, "T-001", "01" * 16, NOW - timedelta(hours=2))
    await check_and_store_nonce(conn, "T-001", "02" * 16, NOW)
    assert await prune_nonces(conn, NOW - timedelta(hours=1)) == 1
    assert await conn.fetchval("SELECT array_agg(nonce) FROM intake_nonces") == ["02" * 16]


async def test_authenticate_record_refuses_replays(conn, tmp_path):
    await load_terminals(
        conn, write_terminals(tmp_path / "t.yaml", [T1.registry_entry("CJ-VC-001")])
    )
    headers, value = signed_record(T1)
    first = await authenticate_record(conn, headers, value, received_at=NOW, max_skew_s=300)
    assert first.code is None and first.terminal.institution_id == "CJ-VC-001"
    again = await authenticate_record(conn, headers, value, received_at=NOW, max_skew_s=300)
    assert again.code == "replayed_nonce"


async def test_authenticate_record_refuses_unknown_forged_and_stale(conn, tmp_path):
    await load_terminals(
        conn,
        write_terminals(
            tmp_path / "t.yaml",
            [T1.registry_entry("CJ-VC-001"), {**T2.registry_entry("CJ-VC-002"), "active": False}],
        ),
    )

    async def code(headers, value, received_at=NOW):
        result = await authenticate_record(
            conn, headers, value, received_at=received_at, max_skew_s=300
        )
        return result.code

    assert await code(*signed_record(TerminalSigner.generate("T-404"))) == "unknown_terminal"
    assert await code(*signed_record(T2)) == "unknown_terminal"  # inactive
    impostor = TerminalSigner.generate("T-001")
    assert await code(*signed_record(impostor)) == "bad_signature"
    assert await code(*signed_record(T1, at=NOW - timedelta(hours=1))) == "stale_timestamp"
    assert await conn.fetchval("SELECT count(*) FROM intake_nonces") == 0  # none burnt


async def test_rolled_back_attempt_does_not_burn_the_nonce(conn, tmp_path):
    await load_terminals(
        conn, write_terminals(tmp_path / "t.yaml", [T1.registry_entry("CJ-VC-001")])
    )
    headers, value = signed_record(T1)

    class Crash(Exception):
        pass

    with pytest.raises(Crash):
        async with conn.transaction():
            ok = await authenticate_record(conn, headers, value, received_at=NOW, max_skew_s=300)
            assert ok.code is None
            raise Crash
    retry = await authenticate_record(conn, headers, value, received_at=NOW, max_skew_s=300)
    assert retry.code is None


async def test_kit_migrations_create_the_intake_tables(database_url):
    schema = f"t_intake_m_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(database_url)
    try:
        applied = await migrate(connection, schema, [("kit", kit_migrations())])
        assert "kit/0002_intake_auth.sql" in applied
        tables = {
            r["tablename"]
            for r in await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1", schema
            )
        }
        assert {"terminals", "intake_nonces"} <= tables
        assert await migrate(connection, schema, [("kit", kit_migrations())]) == []
    finally:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await connection.close()

"""The load generator against the lab on the real broker and database: a few
clinics, each its own registered key, for a couple of seconds at a low rate;
every record is answered or refused with its reason, none lost, and the one
deliberately bad record is counted refused as unknown_test."""

from __future__ import annotations

import math

from yigongti_terminal.load import LoadTarget, drive, make_clinics, register


async def test_every_record_of_three_clinics_is_answered_or_refused_with_its_reason(
        clinic, database_url, schema, kafka_bootstrap, broker_kind, topic_prefix):
    clinics = make_clinics(3, prefix="it-load")
    await register(database_url, schema, clinics)  # the lab's registry (its schema)
    target = LoadTarget(kafka_bootstrap, broker_kind, topic_prefix, send_timeout_s=10)

    figures = await drive(target, clinics, rate=6, seconds=2, bad=1, drain_s=30)

    assert figures["planned"] == 12 and figures["bad_planned"] == 1
    assert figures["send_failed"] == {}
    assert figures["sent"] == 12
    assert figures["lost"] == 0, figures
    assert figures["answered"] + figures["refused"] == figures["sent"]
    assert figures["refused_by_reason"] == {"unknown_test": 1}, figures
    assert figures["achieved_per_s"] > 0
    assert not math.isnan(figures["p50_ms"]) and figures["p50_ms"] <= figures["p99_ms"]


async def test_yigongti_load_drives_registered_clinics_through_the_terminal_s_link(
        clinic, database_url, schema):
    """The command, as a county's IT staff run it against a running stack: the
    terminal's own settings (here its link goes through the cuttable proxy),
    new clinics registered in the lab's registry, the counts and figures."""
    import asyncio
    import json

    from typer.testing import CliRunner
    from yigongti_terminal.cli import app

    out = clinic.config.home / "figures.json"
    result = await asyncio.to_thread(
        CliRunner().invoke, app,
        ["--home", str(clinic.config.home), "load", "--rate", "4", "--clinics", "2",
         "--seconds", "1.5", "--bad", "1", "--drain", "30", "--register-database",
         database_url, "--schema", f"lab={schema}", "--json", str(out)],
        env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "2 new clinic terminals" in text and "refused unknown_test" in text
    figures = json.loads(out.read_text())
    assert figures["sent"] == 6 and figures["lost"] == 0
    assert figures["refused_by_reason"] == {"unknown_test": 1}
    assert len(list((clinic.config.home / "load-clinics").glob("terminal_*.key"))) == 2


async def test_clinics_load_both_the_lab_and_the_referral_service_and_nothing_is_lost(
        clinic, database_url, schema, kit_settings, topics, kafka_bootstrap, broker_kind,
        topic_prefix):
    """The cross-service mix: lab journeys and, one patient in four, an upward
    referral to the referral service (its own schema, in this process too)."""
    import asyncio

    import asyncpg
    from yigongti_kit.service import ServiceRuntime
    from yigongti_referral.app import spec as referral_spec

    referral_schema = f"{schema}_referral"  # dropped with the test's schema
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{referral_schema}"')
    finally:
        await conn.close()
    await topics("referral", "diagnosis")
    referral = ServiceRuntime(referral_spec(), kit_settings("referral", DB_SCHEMA=referral_schema))
    await referral.start()
    try:
        for reader in referral.subscription_consumers.values():
            await asyncio.wait_for(reader.assigned.wait(), 30)
        clinics = make_clinics(2, prefix="it-mix")
        await register(database_url, schema, clinics)
        await register(database_url, referral_schema, clinics)
        target = LoadTarget(kafka_bootstrap, broker_kind, topic_prefix, send_timeout_s=10)

        figures = await drive(target, clinics, rate=8, seconds=2, drain_s=30,
                              services=("lab", "referral"))
    finally:
        await referral.stop()

    assert figures["sent"] == 16 and figures["lost"] == 0, figures
    by = figures["by_service"]
    assert by["referral"]["sent"] >= 1 and by["lab"]["sent"] >= 8
    for service in ("lab", "referral"):
        assert by[service]["answered"] == by[service]["sent"], figures
    assert figures["refused"] == 0

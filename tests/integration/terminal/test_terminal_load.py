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
         database_url, "--schema", schema, "--json", str(out)],
        env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "2 new clinic terminals" in text and "refused unknown_test" in text
    figures = json.loads(out.read_text())
    assert figures["sent"] == 6 and figures["lost"] == 0
    assert figures["refused_by_reason"] == {"unknown_test": 1}
    assert len(list((clinic.config.home / "load-clinics").glob("terminal_*.key"))) == 2

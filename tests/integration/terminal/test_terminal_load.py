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

"""The diagnosis bench with tiny numbers against the service under test: every
part completes and reports figures. Nothing here asserts a speed (STYLE.md)."""

from __future__ import annotations

import os
from types import SimpleNamespace

from yigongti_contracts.topics import topic_name
from yigongti_deploy.bench_diagnosis import report, run


async def test_the_diagnosis_bench_runs_and_reports(dx, kafka_bootstrap, broker_kind):
    prefix = dx.env["TOPIC_PREFIX"]
    stack = SimpleNamespace(
        services={"diagnosis": SimpleNamespace(
            url=f"http://127.0.0.1:{dx.env['HTTP_PORT']}", pid=os.getpid())},
        bootstrap=kafka_bootstrap, broker_kind=broker_kind, keys=dx.dev_keys,
        topic=lambda base: topic_name(base, prefix))
    figures = await run(stack, rate=20, seconds=1, runs=1, uploads=1, probes=2,
                        progress=lambda _: None)
    assert figures["stat_to_worklist"]["requests_per_run"] == 20
    assert figures["upload_and_measure"]["recordings_per_s"] > 0
    assert figures["critical_to_feed"]["probes_per_run"] == 2
    assert figures["memory"]["service_peak_rss_mib"] > 0
    assert "diagnosis bench" in report(figures)

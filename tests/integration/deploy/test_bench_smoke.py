"""`make bench` with tiny numbers on the test fixtures (the lab as its own
process): the floor and the journey complete and produce figures. Nothing here
asserts a speed (STYLE.md): the figures are read by people, from `make bench`."""

from __future__ import annotations

import json

import pytest
from yigongti_contracts.topics import topic_name
from yigongti_deploy.bench import report, run_bench, verdict, write_json
from yigongti_deploy.bench_common import BenchTarget
from yigongti_deploy.bench_lab import STEPS, Capabilities, plan

pytestmark = pytest.mark.slow


@pytest.fixture
async def bench_target(service_process, topics, kit_env, dev_keys, database_url,
                       kafka_bootstrap, broker_kind, topic_prefix, schema):
    await topics("lab")
    lab = await service_process("lab", kit_env("lab"))
    return BenchTarget(
        bootstrap=kafka_bootstrap,
        broker_kind=broker_kind,
        database_url=database_url,
        keys=dev_keys,
        lab_url=lab.url,
        topic=lambda base: topic_name(base, topic_prefix),
        topic_prefix=topic_prefix,
        lab_pid=lab.pid,
        lab_schema=schema,
    )


@pytest.mark.timeout(240)
async def test_the_bench_runs_the_floor_and_the_journey_and_reports_figures(
    bench_target, tmp_path
):
    figures = await run_bench(bench_target, floor_events=20, orders=10, concurrency=4,
                              warmup=2, max_seconds=60, critical_load=20, critical_seconds=2,
                              critical_probes_per_s=2, progress=lambda _: None)

    floor = figures["floor"]
    for variant in ("per_event_before", "per_event_after", "per_batch"):
        assert floor[variant]["events"] == 20
        assert floor[variant]["events_per_s"] > 0
    journey = figures["journey"]
    assert journey["steps"][:3] == ["order", "collect", "dispatch"]
    assert journey["journeys_completed"] == 10, journey["per_step"]
    assert journey["journeys_failed"] == 0
    assert journey["specimens_completed"] == 15  # one or two tubes, alternately
    for step in journey["steps"]:
        assert journey["per_step"][step]["count"] > 0
    assert figures["ratio"] > 0
    critical = figures["critical_value_latency"]
    assert critical["failures"] == {}
    assert critical["probes"] >= 3
    assert critical["confirm_to_clinic_feed"]["count"] == critical["probes"]
    assert critical["confirm_to_event"]["count"] == critical["probes"]
    assert critical["load_inputs_per_s"] > 0

    text = report(figures)
    assert verdict(figures) in text
    assert "critical value to the clinic" in text
    path = write_json(figures, tmp_path)
    assert json.loads(path.read_text())["ratio"] == figures["ratio"]


async def test_every_step_of_the_journey_is_found_in_the_lab(bench_target):
    """The HTTP staff steps are matched in the lab's OpenAPI and the intake steps
    in its handlers; a step that stops matching shows up here, not as a silently
    shorter journey in `make bench`."""
    caps = await Capabilities.detect(
        bench_target.lab_url, {s.name: s.http_patterns for s in STEPS if s.via == "http"})
    active, missing = plan(caps)
    assert missing == {}
    assert [s.name for s in active] == [s.name for s in STEPS]


@pytest.mark.timeout(120)
async def test_the_clinics_bench_drives_registered_clinics_and_reports_every_record(
    bench_target
):
    """bench_clinics with tiny numbers: every record answered or refused (the
    one bad order as unknown_test), the figures and the report complete."""
    from types import SimpleNamespace

    from yigongti_deploy import bench_clinics

    stack = SimpleNamespace(  # what run_bench reads of a Stack
        database_url=bench_target.database_url, bootstrap=bench_target.bootstrap,
        broker_kind=bench_target.broker_kind, topic_prefix=bench_target.topic_prefix,
        services={"lab": SimpleNamespace(pid=bench_target.lab_pid)}, service_names=["lab"])
    figures = await bench_clinics.run_bench(stack, rate=5, clinics=2, seconds=2, runs=1,
                                            bad=1, drain_s=30, warmup_s=0,
                                            schemas={"lab": bench_target.lab_schema})
    (run,) = figures["runs"]
    assert run["sent"] == 10 and run["lost"] == 0
    assert run["answered"] == 9 and run["refused_by_reason"] == {"unknown_test": 1}
    assert figures["refused_by_reason"] == {"unknown_test": 1}
    assert run["lab_peak_rss_mib"] and run["lab_peak_rss_mib"] > 0
    text = bench_clinics.report(figures)
    assert "2 clinic terminals at 5 records/s" in text and "lost 0" in text

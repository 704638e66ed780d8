"""`make demo` (yigongti-demo): the journey exits 0, prints its timeline, and its
spans, written by every process in the OTLP JSON encoding, form one trace or
traces linked to it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from yigongti_deploy import trace_summary

BIN = Path(sys.executable).parent


def test_the_demo_runs_the_journey_in_one_trace(tmp_path):
    done = subprocess.run([str(BIN / "yigongti-demo")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "OK: the lab journey completed" in out
    assert "lab physician verifies the report: HTTP 200" in out
    assert "the journey's trace, from" in out and "slowest span:" in out

    [spans_file] = list(tmp_path.glob(".run/stack-*/spans.otlp.jsonl"))
    spans = trace_summary.load(spans_file)
    [journey] = [s for s in spans if s.name == "demo journey"]
    summary = trace_summary.summary(spans, journey.trace_id)
    assert summary.outside == (), [(s.service, s.name) for s in summary.outside[:10]]
    assert summary.dangling_links == ()
    assert {"demo", "lab"} <= set(summary.services)
    assert summary.kafka_hops >= 6 and summary.http_requests >= 5
    assert summary.linked > 0  # the analyser's HL7 messages, linked to the order's trace

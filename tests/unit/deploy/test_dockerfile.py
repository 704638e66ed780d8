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


def test_the_build_fails_unless_the_service_installed_its_command():
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    link = text.index('ln -s "/opt/venv/bin/yigongti-${SERVICE}"')
    check = text.index('test -x "/opt/venv/bin/yigongti-${SERVICE}"')
    assert check < link  # in the same RUN, joined by &&: a missing command stops the build
    assert "&&" in text[check:link]


def test_every_deployed_service_declares_the_command_its_image_links():
    """k8s deploys an image per name in k8sgen.DEPLOYED: its package must have
    the yigongti-<service> command the Dockerfile links (and checks)."""
    import tomllib

    from yigongti_deploy.k8sgen import DEPLOYED

    for service in DEPLOYED:
        project = tomllib.loads((DOCKERFILE.parents[1] / "services" / service /
                                 "pyproject.toml").read_text())["project"]
        assert f"yigongti-{service}" in project.get("scripts", {}), service


def test_the_image_has_a_healthcheck_on_healthz():
    steps = instructions()
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM"):]
    (check,) = [arg for op, arg in final if op == "HEALTHCHECK"]
    assert "/healthz" in check and "CMD" in check

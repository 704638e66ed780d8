"""Checks of a built Deployment shared by the manifest tests (test_manifests.py
for the deployed services, test_all_services.py for all four)."""

from __future__ import annotations

from k8s_tools import K8S


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def env_config(name: str) -> dict[str, str]:
    """A generated ConfigMap's data, from its env file (generated/<service>.env)."""
    service = name.removesuffix("-config")
    lines = (K8S / "base" / "generated" / f"{service}.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def deployment_is_probed_bounded_and_locked_down(where, deployment, docs):
    pod = deployment["spec"]["template"]["spec"]
    assert pod.get("automountServiceAccountToken") is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in pod["containers"]:
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        resources = container["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"]
        assert resources["limits"]["memory"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        # A read-only root needs a writable /tmp.
        assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])


def grace_period_outlasts_the_graceful_shutdown(where, deployment, docs):
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    config_names = [e["configMapRef"]["name"] for e in container.get("envFrom", [])]
    built = [c["data"] for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] in config_names]
    config = built[0] if built else env_config(config_names[0])
    pause = 0
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if pre_stop and pre_stop[0] == "sleep":
        pause = float(pre_stop[1])
    assert pod["terminationGracePeriodSeconds"] > float(config["GRACEFUL_TIMEOUT_S"]) + pause


def each_deployment_has_service_pdb_policy_and_autoscaler(where, deployment, docs):
    name = deployment["metadata"]["name"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert any(s["spec"]["selector"] == selector for s in of_kind(docs, "Service"))
    assert any(
        p["spec"]["selector"]["matchLabels"] == selector
        for p in of_kind(docs, "PodDisruptionBudget")
    )
    assert any(
        p["spec"]["podSelector"].get("matchLabels") == selector
        for p in of_kind(docs, "NetworkPolicy")
    )
    scaled = [
        s for s in of_kind(docs, "ScaledObject") if s["spec"]["scaleTargetRef"]["name"] == name
    ]
    assert scaled and "replicas" not in deployment["spec"]  # KEDA owns the count

"""The Kubernetes manifests: they parse, build with kustomize, and keep the
platform's rules (probes, resources, locked-down pods, least privilege).
Schemas: test_schemas.py; checkov: test_checkov.py; the generated Kafka
objects: test_generated.py."""

from __future__ import annotations

import k8s_tools
import pytest
import yaml
from k8s_tools import K8S, KUSTOMIZATIONS, build

HAND_WRITTEN = [K8S / "base", K8S / "overlays"]  # k8s/crds holds operators' CRDs


def raw_documents() -> list[dict]:
    docs = []
    for root in HAND_WRITTEN:
        for path in sorted(root.rglob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc is not None:
                    docs.append(doc)
    return docs


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def test_every_yaml_file_parses_into_named_resources():
    docs = raw_documents()
    assert docs
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), doc
        if doc["kind"] != "Kustomization":
            assert doc.get("metadata", {}).get("name"), doc


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kustomize_builds(kustomization):
    docs = build(kustomization)
    assert of_kind(docs, "Deployment")
    namespaced = [d for d in docs if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"yigongti"}


def deployments_to_check() -> list[tuple[str, dict, list[dict]]]:
    """(where, deployment, all documents of that build) for the raw base and every build."""
    raw = raw_documents()
    cases = [("raw", d, raw) for d in of_kind(raw, "Deployment")]
    try:
        for k in KUSTOMIZATIONS:
            docs = build(k)
            cases += [(k, d, docs) for d in of_kind(docs, "Deployment")]
    except (pytest.skip.Exception, pytest.fail.Exception):
        pass  # no kubectl: test_kustomize_builds says so (and fails under CI=true)
    return cases


@pytest.mark.parametrize(
    "where,deployment,docs",
    deployments_to_check(),
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_deployment_is_probed_bounded_and_locked_down(where, deployment, docs):
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


@pytest.mark.parametrize(
    "where,deployment,docs",
    deployments_to_check(),
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_grace_period_outlasts_the_graceful_shutdown(where, deployment, docs):
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    config_names = [e["configMapRef"]["name"] for e in container.get("envFrom", [])]
    config = next(
        c["data"] for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] in config_names
    )
    pause = 0
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if pre_stop and pre_stop[0] == "sleep":
        pause = float(pre_stop[1])
    assert pod["terminationGracePeriodSeconds"] > float(config["GRACEFUL_TIMEOUT_S"]) + pause


@pytest.mark.parametrize(
    "where,deployment,docs",
    deployments_to_check(),
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_each_deployment_has_service_pdb_policy_and_autoscaler(where, deployment, docs):
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


def test_secrets_come_from_secret_references():
    for deployment in of_kind(raw_documents(), "Deployment"):
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        for name in ("DATABASE_URL", "AUTH_PUBLIC_KEY", "KAFKA_SASL_PASSWORD"):
            assert "secretKeyRef" in env[name]["valueFrom"], name
    for config in of_kind(raw_documents(), "ConfigMap"):
        for key in config.get("data", {}):
            assert "PASSWORD" not in key and key != "DATABASE_URL"


def test_namespace_denies_by_default_and_allows_only_dns_kafka_postgres():
    policies = of_kind(raw_documents(), "NetworkPolicy")
    deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and "ingress" not in p["spec"]
        and "egress" not in p["spec"]
    ]
    assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    egress_ports = {
        port["port"]
        for p in policies
        for rule in p["spec"].get("egress", [])
        for port in rule.get("ports", [])
    }
    assert egress_ports == {53, 9093, 5432}


@pytest.mark.parametrize("kustomization", k8s_tools.OVERLAYS)
def test_hard_spread_constraints_only_use_a_label_every_node_has(kustomization):
    """Without zone labels (on-prem), DoNotSchedule on topology.kubernetes.io/zone
    leaves every pod Pending; kubernetes.io/hostname is set on every node."""
    for deployment in of_kind(build(kustomization), "Deployment"):
        constraints = deployment["spec"]["template"]["spec"].get("topologySpreadConstraints", [])
        hard = [c for c in constraints if c["whenUnsatisfiable"] == "DoNotSchedule"]
        for c in hard:
            assert c["topologyKey"] == "kubernetes.io/hostname", c
            # a tainted node (control plane, cordoned) is not an empty node to fill
            assert c.get("nodeTaintsPolicy") == "Honor", c
        zones = [c for c in constraints if c["topologyKey"] == "topology.kubernetes.io/zone"]
        assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" for c in zones)


def test_prod_keeps_replicas_of_a_service_on_different_nodes():
    for deployment in of_kind(build("overlays/prod"), "Deployment"):
        constraints = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert any(c["topologyKey"] == "kubernetes.io/hostname"
                   and c["whenUnsatisfiable"] == "DoNotSchedule" for c in constraints)


def test_a_missing_tool_skips_on_a_developer_machine_and_fails_under_ci(monkeypatch):
    import yigongti_deploy.k8scheck as k8scheck

    monkeypatch.setattr(k8scheck, "find_kubectl", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        k8s_tools.kubectl()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        k8s_tools.kubectl()

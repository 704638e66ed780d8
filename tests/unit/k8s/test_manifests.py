"""The Kubernetes manifests: they parse, build with kustomize, and keep the
platform's rules (probes, resources, locked-down pods, least privilege).
Schemas: test_schemas.py; checkov: test_checkov.py; the generated Kafka
objects: test_generated.py."""

from __future__ import annotations

from pathlib import Path

import k8s_checks
import k8s_tools
import pytest
import yaml
from k8s_checks import env_config
from k8s_tools import K8S, KUSTOMIZATIONS, build

HAND_WRITTEN = [K8S / "base", K8S / "overlays", K8S / "cluster"]  # k8s/crds: operators' CRDs
CLUSTER_SCOPED = {"Namespace", "Bundle"}


def generator_inputs(kustomization: Path) -> set[Path]:
    """Files a kustomization turns into ConfigMaps (data, not objects)."""
    spec = yaml.safe_load(kustomization.read_text())
    found = set()
    for generator in spec.get("configMapGenerator") or []:
        for entry in generator.get("files", []) + generator.get("envs", []):
            found.add(kustomization.parent / entry.rpartition("=")[2])
    return found


def raw_documents() -> list[dict]:
    docs = []
    for root in HAND_WRITTEN:
        data = set().union(*(generator_inputs(k) for k in root.rglob("kustomization.yaml")))
        for path in sorted(root.rglob("*.yaml")):
            if path in data:
                continue
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
    namespaced = [d for d in docs if d["kind"] not in CLUSTER_SCOPED]
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
    k8s_checks.deployment_is_probed_bounded_and_locked_down(where, deployment, docs)


@pytest.mark.parametrize(
    "where,deployment,docs",
    deployments_to_check(),
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_grace_period_outlasts_the_graceful_shutdown(where, deployment, docs):
    k8s_checks.grace_period_outlasts_the_graceful_shutdown(where, deployment, docs)


@pytest.mark.parametrize(
    "where,deployment,docs",
    deployments_to_check(),
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_each_deployment_has_service_pdb_policy_and_autoscaler(where, deployment, docs):
    k8s_checks.each_deployment_has_service_pdb_policy_and_autoscaler(where, deployment, docs)


def test_secrets_come_from_secret_references():
    for deployment in of_kind(raw_documents(), "Deployment"):
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "secretKeyRef" in env["KAFKA_SASL_PASSWORD"]["valueFrom"]
        for name, entry in env.items():
            if "PASSWORD" in name:
                assert "secretKeyRef" in entry["valueFrom"], name
    for path in (K8S / "base" / "generated").glob("*.env"):
        config = env_config(path.stem)
        assert not any("PASSWORD" in key for key in config), path
        # the database login is the DatabaseRole's client certificate, never a password
        assert "@" in config["DATABASE_URL"] and ":" not in config["DATABASE_URL"].split(
            "//")[1].split("@")[0], path


def test_namespace_denies_by_default_and_every_egress_names_where_and_which_port():
    policies = of_kind(raw_documents(), "NetworkPolicy")
    deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and "ingress" not in p["spec"]
        and "egress" not in p["spec"]
    ]
    assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to") and rule.get("ports"), policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from") and rule.get("ports"), policy["metadata"]["name"]
    egress_ports = {
        port["port"]
        for p in policies
        for rule in p["spec"].get("egress", [])
        for port in rule.get("ports", [])
    }
    # DNS, Kafka, PostgreSQL (and its status port between instances), OTLP, the
    # object store of the backups, the API server (CloudNativePG's instances)
    assert egress_ports == {53, 9093, 5432, 8000, 4318, 443, 6443}


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

"""Every built object is checked offline: Kubernetes kinds strictly against the
schemas of a current Kubernetes release (kubernetes-validate), custom resources
against their operators' CRDs vendored in k8s/crds/ (served version, structure,
unknown fields, CEL rules, ObjectMeta). The checker is yigongti_deploy.k8scheck."""

from __future__ import annotations

import copy
import hashlib
import socket
from importlib.metadata import version

import k8s_tools
import pytest
from k8s_tools import K8S, KUSTOMIZATIONS, build

try:
    from yigongti_deploy import k8scheck
except ImportError as e:  # deploy[check] not installed
    k8scheck = None
    MISSING = e.name


@pytest.fixture
def checker():
    if k8scheck is None:
        k8s_tools.missing(f"the manifest checker's dependencies ({MISSING})")
    return k8scheck


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach the network in this process fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_built_object_matches_its_schema_offline(kustomization, checker, no_network):
    objects = build(kustomization)
    assert checker.problems(objects) == []
    k8s_tools.VERSIONS["kubernetes-validate"] = (
        f"{version('kubernetes-validate')}, strict schemas of Kubernetes "
        f"{checker.KUBERNETES_VERSION}")


def custom_resources() -> list[dict]:
    """Objects of groups that Kubernetes itself does not define."""
    def group(d: dict) -> str:
        return d["apiVersion"].rpartition("/")[0]
    return [d for d in build("overlays/prod")
            if "." in group(d) and not group(d).endswith(".k8s.io")]


def test_every_custom_resource_kind_has_a_vendored_crd(checker):
    kinds = {(d["apiVersion"].rpartition("/")[0], d["kind"]) for d in custom_resources()}
    assert kinds == {("kafka.strimzi.io", "KafkaTopic"), ("kafka.strimzi.io", "KafkaUser"),
                     ("keda.sh", "ScaledObject"), ("postgresql.cnpg.io", "Cluster"),
                     ("postgresql.cnpg.io", "DatabaseRole"), ("postgresql.cnpg.io", "Database"),
                     ("postgresql.cnpg.io", "ScheduledBackup"),
                     ("barmancloud.cnpg.io", "ObjectStore"),
                     ("monitoring.coreos.com", "PodMonitor"),
                     ("monitoring.coreos.com", "PrometheusRule"),
                     ("trust.cert-manager.io", "Bundle")}
    assert kinds <= set(checker.load_crds())


def test_vendored_crds_name_their_release_and_path_and_are_unchanged(checker):
    crds = checker.load_crds()
    assert {c.repo for c in crds.values()} == {
        "strimzi/strimzi-kafka-operator", "kedacore/keda", "cloudnative-pg/cloudnative-pg",
        "cloudnative-pg/plugin-barman-cloud", "prometheus-operator/prometheus-operator",
        "cert-manager/trust-manager"}
    for path in sorted((K8S / "crds").glob("*.yaml")):
        lines = path.read_bytes().splitlines(keepends=True)
        n = next(i for i, line in enumerate(lines) if not line.startswith(b"# "))
        header, body = b"".join(lines[:n]), b"".join(lines[n:])
        source = checker.SOURCE.search(header.decode())
        assert source, path
        # git's blob id of what follows the header: the file as it is at that tag
        digest = hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()
        assert digest == source["blob"], path


def test_strimzi_crds_serve_only_v1(checker):
    for kind in ("KafkaTopic", "KafkaUser"):
        crd = checker.load_crds()[("kafka.strimzi.io", kind)]
        assert [v for v, e in crd.versions.items() if e["served"]] == ["v1"]


# --- the checks can fail --------------------------------------------------------

def one(kind: str, name: str | None = None) -> dict:
    return copy.deepcopy(next(d for d in build("overlays/prod") if d["kind"] == kind
                              and (name is None or d["metadata"]["name"] == name)))


def test_a_strimzi_v1beta2_object_is_refused(checker):
    topic = one("KafkaTopic", "lab.intake.v1")
    topic["apiVersion"] = "kafka.strimzi.io/v1beta2"
    (problem,) = checker.problems([topic])
    assert "v1beta2 is not served by strimzi/strimzi-kafka-operator" in problem


def test_an_unknown_field_of_a_custom_resource_is_refused(checker):
    user = one("KafkaUser", "lab")
    user["spec"]["authorisation"] = user["spec"].pop("authorization")
    assert any("'authorisation' was unexpected" in p for p in checker.problems([user]))


def test_a_wrong_enum_value_is_refused(checker):
    user = one("KafkaUser", "lab")
    user["spec"]["authorization"]["acls"][0]["operations"] = ["Reed"]
    assert any("'Reed' is not one of" in p for p in checker.problems([user]))


def test_a_cel_rule_of_a_crd_is_enforced(checker):
    scaled = one("ScaledObject", "lab")
    scaled["spec"]["minReplicaCount"] = scaled["spec"]["maxReplicaCount"] + 1
    assert checker.problems([scaled]) == [
        "keda.sh/v1alpha1 ScaledObject/lab: .spec: "
        "minReplicaCount must be less than or equal to maxReplicaCount"]


def test_the_metadata_of_a_custom_resource_is_checked_as_object_meta(checker):
    topic = one("KafkaTopic")
    topic["metadata"]["lables"] = {}
    assert any("'lables' was unexpected" in p for p in checker.problems([topic]))


def test_a_misspelt_kubernetes_field_is_refused(checker):
    deployment = one("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    assert any("'imagePulPolicy' was unexpected" in p for p in checker.problems([deployment]))


def test_a_kind_with_no_schema_is_refused(checker):
    rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": "yigongti"}, "spec": {"endpoints": []}}
    (problem,) = checker.problems([rule])
    assert "no schema" in problem

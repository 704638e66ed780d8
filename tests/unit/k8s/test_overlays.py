"""What the overlays promise ops: prod talks TLS and SCRAM to Kafka and
verified TLS to PostgreSQL; the site's address ranges agree where they are
repeated; ConfigMaps are hashed so an edit rolls the pods; the Ingress routes
the API only; prod images are pinned by digest before release; the face
platform's sandbox never reaches prod."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import k8s_tools
import pytest
import yaml
from k8s_tools import K8S, OVERLAYS, build, build_all_services
from yigongti_contracts.topics import SERVICES
from yigongti_deploy import k8scheck
from yigongti_deploy.k8sworkloads import NOT_ROUTED, REPO, UNROUTABLE, api_prefixes

HASHED = re.compile(r"-[a-z0-9]{10}$")


def named(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def service_configs(docs: list[dict]) -> dict[str, dict[str, str]]:
    return {c["metadata"]["labels"]["app.kubernetes.io/name"]: c["data"]
            for c in named(docs, "ConfigMap").values()
            if c["metadata"].get("labels", {}).get("yigongti/config") == "service"}


def test_prod_talks_tls_and_scram_to_kafka_and_verified_tls_to_postgres():
    configs = service_configs(build_all_services("overlays/prod"))
    assert set(configs) == set(SERVICES)
    for service, config in configs.items():
        assert config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", service
        assert config["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512", service
        assert config["KAFKA_SSL_CAFILE"], service
        assert config["DB_SSLMODE"] == "verify-full", service
        assert config["DB_SSLROOTCERT"] and config["DB_SSLCERT"] and config["DB_SSLKEY"]
        assert config["DOCS_PUBLIC"] == "false", service
        assert config["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http"), service


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_analysers_ranges_agree_in_the_listener_the_load_balancer_and_the_policy(overlay):
    docs = build(overlay)
    peers = service_configs(docs)["lab"]["MLLP_ALLOWED_PEERS"].split(",")
    balancer = named(docs, "Service")["lab-mllp"]["spec"]["loadBalancerSourceRanges"]
    (rule,) = named(docs, "NetworkPolicy")["lab-mllp"]["spec"]["ingress"]
    policy = [f["ipBlock"]["cidr"] for f in rule["from"]]
    assert peers == balancer == policy
    assert peers != [UNROUTABLE]  # the overlay said where the lab centre is


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_placeholder_range_is_replaced_by_the_overlay(overlay):
    for name, policy in named(build_all_services(overlay), "NetworkPolicy").items():
        for rule in policy["spec"].get("egress", []) + policy["spec"].get("ingress", []):
            for peer in rule.get("to", []) + rule.get("from", []):
                assert peer.get("ipBlock", {}).get("cidr") != UNROUTABLE, (overlay, name)


@pytest.mark.parametrize("overlay", k8s_tools.KUSTOMIZATIONS)
def test_config_maps_are_hashed_and_referenced_by_their_hashed_names(overlay):
    docs = build(overlay)
    config_maps = set(named(docs, "ConfigMap"))
    assert config_maps and all(HASHED.search(n) for n in config_maps)
    for deployment in named(docs, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        refs = [e["configMapRef"]["name"] for e in pod["containers"][0]["envFrom"]]
        refs += [v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v]
        refs += [e["valueFrom"]["configMapKeyRef"]["name"] for e in pod["containers"][0]["env"]
                 if "configMapKeyRef" in e.get("valueFrom", {})]
        # the Kafka CA is trust-manager's (k8s/cluster), kept in step with Strimzi's Secret
        assert set(refs) - {"yigongti-kafka-ca"} <= config_maps, deployment["metadata"]["name"]


def test_taking_a_terminal_out_of_the_file_renames_its_config_map(tmp_path):
    """So the pods roll on apply and load the file again, which revokes it."""
    shutil.copytree(K8S, tmp_path / "k8s")
    overlay = tmp_path / "k8s" / "overlays" / "prod"

    def terminals_name() -> str:
        out = subprocess.run([k8s_tools.kubectl(), "kustomize", str(overlay)], check=True,
                             capture_output=True, text=True, timeout=60).stdout
        return next(n for n in named([d for d in yaml.safe_load_all(out) if d], "ConfigMap")
                    if n.startswith("terminals-"))

    before = terminals_name()
    (overlay / "terminals.yaml").write_text(
        "terminals:\n  - {terminal_id: t1, institution_id: 652325-B01, public_key: k}\n")
    listed = terminals_name()
    (overlay / "terminals.yaml").write_text("terminals: []\n")
    removed = terminals_name()
    assert len({before, listed, removed}) == 3


def test_the_ingress_routes_the_api_and_never_health_docs_or_metrics():
    document = json.loads((REPO / "services" / "lab" / "openapi.json").read_text())
    for overlay in OVERLAYS:
        for ingress in named(build_all_services(overlay), "Ingress").values():
            paths = [p["path"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
            for path in paths:
                first = path.strip("/").split("/")[0]
                assert first and not any(first.startswith(n) for n in NOT_ROUTED), path
            assert ingress["spec"]["tls"][0]["hosts"] == [ingress["spec"]["rules"][0]["host"]]
            if ingress["metadata"]["name"] == "lab":
                assert paths == api_prefixes(document)
                assert "/orders" in paths and "/healthz" not in paths


def test_api_prefixes_leave_out_health_docs_and_metrics():
    document = {"paths": {"/healthz": {}, "/readyz": {}, "/docs": {}, "/openapi.json": {},
                          "/asyncapi.yaml": {}, "/metrics": {}, "/feed": {}, "/orders/{id}": {}}}
    assert api_prefixes(document) == ["/feed", "/orders"]


def test_the_release_gate_refuses_tags_and_takes_digests():
    docs = build_all_services("overlays/prod")
    unpinned = k8scheck.unpinned_images(docs)
    assert {u.split(":")[0] for u in unpinned} == (
        {f"Deployment/{s}" for s in SERVICES} | {f"CronJob/{s}-tools" for s in SERVICES})
    digest = "@sha256:" + "0" * 64
    for line in unpinned:
        kind, _, name = line.split(":")[0].partition("/")
        obj = named(docs, kind)[name]
        spec = obj["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else obj["spec"]
        container = spec["template"]["spec"]["containers"][0]
        container["image"] = container["image"].rsplit(":", 1)[0] + digest
    assert k8scheck.unpinned_images(docs) == []


def test_the_face_platform_sandbox_never_reaches_prod():
    docs = build_all_services("overlays/prod")
    issuers = yaml.safe_load(named(docs, "ConfigMap")[next(
        n for n in named(docs, "ConfigMap") if n.startswith("face-issuers-"))]["data"][
        "issuers.yaml"])["issuers"]
    assert not any("sandbox" in json.dumps(i).lower() for i in issuers)
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            continue  # comments in data may name it; the issuers are checked above
        text = json.dumps({k: v for k, v in doc.items() if k != "metadata"} |
                          {"name": doc["metadata"]["name"],
                           "labels": doc["metadata"].get("labels", {})}).lower()
        assert "sandbox" not in text, (doc["kind"], doc["metadata"]["name"])
    assert "sandbox" not in json.dumps(service_configs(docs)).lower()

"""The four services from one template (k8sworkloads.APPS): built with every
service deployed, each has what it needs, passes the schemas, and keeps the
lab's hardening. Tested now, before the diagnosis, referral and settlement
images exist, so adding a name to k8sgen.DEPLOYED is all their deployment takes."""

from __future__ import annotations

import k8s_tools
import pytest
import yaml
from k8s_checks import (
    deployment_is_probed_bounded_and_locked_down,
    each_deployment_has_service_pdb_policy_and_autoscaler,
    grace_period_outlasts_the_graceful_shutdown,
)
from k8s_tools import OVERLAYS, build_all_services
from yigongti_contracts.topics import SERVICES
from yigongti_deploy import k8scheck
from yigongti_deploy.k8sworkloads import APPS, UNROUTABLE


def named(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_of_all_four_services_matches_its_schema(overlay):
    assert k8scheck.problems(build_all_services(overlay)) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_its_pods_way_in_policies_database_and_toolbox(overlay):
    docs = build_all_services(overlay)
    assert set(SERVICES) <= set(named(docs, "Deployment"))
    for service in SERVICES:
        for kind in ("ServiceAccount", "Service", "PodDisruptionBudget", "NetworkPolicy",
                     "ScaledObject", "DatabaseRole", "Database", "KafkaUser"):
            assert service in named(docs, kind), (service, kind)
        assert f"{service}-tools" in named(docs, "CronJob")
        deployment = named(docs, "Deployment")[service]
        deployment_is_probed_bounded_and_locked_down(overlay, deployment, docs)
        each_deployment_has_service_pdb_policy_and_autoscaler(overlay, deployment, docs)
        grace_period_outlasts_the_graceful_shutdown(overlay, deployment, docs)
    rule_groups = {g["name"] for r in named(docs, "PrometheusRule").values()
                   for g in r["spec"]["groups"]}
    assert rule_groups == {f"yigongti-{s}" for s in SERVICES}
    hba = named(docs, "Cluster")["yigongti-pg"]["spec"]["postgresql"]["pg_hba"]
    assert hba == [f"hostssl {s} {s} all cert" for s in SERVICES]


def test_only_the_diagnosis_service_reaches_the_pacs_and_only_where_the_overlay_says():
    for overlay in OVERLAYS:
        policies = named(build_all_services(overlay), "NetworkPolicy")
        pacs = [n for n in policies if n.endswith("-pacs")]
        assert pacs == ["diagnosis-pacs"]
        (rule,) = policies["diagnosis-pacs"]["spec"]["egress"]
        assert [t["ipBlock"]["cidr"] for t in rule["to"]] != [UNROUTABLE], overlay
    base = named(build_all_services("base"), "NetworkPolicy")["diagnosis-pacs"]
    assert base["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": UNROUTABLE}}]


def test_only_the_lab_listens_for_analysers():
    docs = build_all_services("overlays/prod")
    for service in SERVICES:
        ports = {p["name"] for p in named(docs, "Deployment")[service]["spec"]["template"][
            "spec"]["containers"][0]["ports"]}
        assert ports == ({"http", "metrics", "mllp"} if APPS[service].mllp
                         else {"http", "metrics"}), service
    assert [n for n, s in named(docs, "Service").items()
            if s["spec"].get("type") == "LoadBalancer"] == ["lab-mllp"]


def test_the_toolbox_runs_as_the_dlq_tool_on_kafka_and_the_service_on_postgres():
    docs = build_all_services("overlays/prod")
    for service in SERVICES:
        job = named(docs, "CronJob")[f"{service}-tools"]["spec"]
        assert job["suspend"] is True
        pod = job["jobTemplate"]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        assert env["KAFKA_SASL_USERNAME"]["value"] == "yigongti-dlq"
        assert env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "yigongti-dlq"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["postgres-client"]["secret"]["secretName"] == f"{service}-client-cert"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["automountServiceAccountToken"] is False


def test_checkov_finds_nothing_with_all_four_services(tmp_path):
    checkov = k8s_tools.checkov()
    for overlay in OVERLAYS:
        (tmp_path / f"{overlay.split('/')[-1]}.yaml").write_text(
            yaml.safe_dump_all(build_all_services(overlay)))
    report, stderr = k8s_tools.checkov_scan(checkov, str(tmp_path))
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}"
              for c in report["results"]["failed_checks"]]
    assert failed == []
    assert "Traceback" not in stderr

"""Writes k8s/base/generated/ from the contracts and the service table: the
Kafka topics, the Kafka users with their ACLs, and for each deployed service
everything that runs it (k8sworkloads: pods, Service, Ingress, policies,
database identity, toolbox, lag scaler), the PostgreSQL cluster and the
monitoring (k8splatform).

    python -m yigongti_deploy.k8sgen           # (re)write the files
    python -m yigongti_deploy.k8sgen --check   # exit 1 if they differ from what it would write

Topics, service users, scalers and alerts come from the topic registry
(yigongti_contracts.topics); institution and LIS-bridge users from the reference
data (yigongti_contracts.refdata); a service's pods from its row in
k8sworkloads.APPS and its checked-in OpenAPI (the Ingress paths). A new topic,
subscription, institution, lab centre or API path reaches the cluster by
re-running this; `make test` fails while the checked-in files differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from yigongti_contracts.refdata import Institution, Kind, load
from yigongti_contracts.topics import SERVICES, TOPICS, Topic, consumed_by, topics_for

from . import k8splatform, k8sworkloads
from .k8sworkloads import APPS, DLQ_TOOL_USER
from .k8syaml import Doc, Flow, FlowList, dump, env_file

OUT = Path(__file__).resolve().parents[2] / "k8s" / "base" / "generated"

# Services whose pods run (their image exists): each gets its Deployment and
# the rest from k8sworkloads.APPS, its scaler, database and alerts. A service's
# issue adds its name here once its app is built; no hand-written manifest.
DEPLOYED = ("lab", "diagnosis")

CLUSTER = "yigongti"  # the Strimzi Kafka cluster (label strimzi.io/cluster)
REPLICAS = 3  # each partition on three brokers, ...
MIN_INSYNC = "2"  # ... of which two must have a write (acks=all) before it counts
DAY_MS = 86_400_000

# Broker settings of each kind of topic (assumed: chosen for this deployment).
TOPIC_CONFIG: dict[str, dict[str, str]] = {
    "intake": {
        "message.timestamp.type": "LogAppendTime",
        "retention.ms": str(7 * DAY_MS),
        "max.message.bytes": "1048576",
    },
    "events": {"retention.ms": str(30 * DAY_MS)},
    "dlq": {"retention.ms": str(30 * DAY_MS)},
}
TOPIC_NOTE = {
    "intake": "What terminals and analysers send. Stamped with broker time (LogAppendTime):\n"
    "intake signatures are judged fresh by it, not by the sender's clock. Kept 7 days\n"
    "(the inbox remembers ids 14); max.message.bytes is above MAX_RECORD_BYTES (262144).",
    "events": "Only the owner writes it. Kept 30 days.",
    "dlq": "Records its consumer could not decode. Kept 30 days to inspect and replay\n"
    "(yigongti-dlq); one partition keeps them in arrival order.",
}

# Lag scaling (KEDA reads Strimzi's Kafka Exporter metrics from Prometheus, so it
# needs no Kafka credentials). assumed: a starting point, tuned per overlay.
PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
MIN_PODS = 2
LAG_PER_POD = 100  # records behind, per consumer group, before another pod is added
POLL_S = 15
# KEDA's cooldownPeriod only applies when scaling to zero; with at least one
# pod the HPA's scale-down window is what slows scaling down.
SCALE_DOWN_WINDOW_S = 300

# --- who reads what -----------------------------------------------------------

def subscription_group(service: str, topic: Topic) -> str:
    """The consumer group with which `service` reads another service's events."""
    return f"{service}.{topic.name}"


def consumer_groups(service: str) -> list[tuple[str, Topic]]:
    """(group, topic) for each topic the service consumes: its intake under its
    own name, each subscribed events topic under a group of its own."""
    topics = sorted(consumed_by(service), key=lambda t: t.kind != "intake")
    return [(service if t.kind == "intake" else subscription_group(service, t), t)
            for t in topics]


def intake_topics() -> list[Topic]:
    return [t for t in TOPICS if t.kind == "intake"]


# --- objects ------------------------------------------------------------------

def _labels(name: str | None = None, component: str | None = None) -> dict[str, str]:
    labels = {"strimzi.io/cluster": CLUSTER}
    if name:
        labels["app.kubernetes.io/name"] = name
    if component:
        labels["app.kubernetes.io/component"] = component
    return labels


def topic_doc(t: Topic) -> Doc:
    readers = ", ".join(t.consumers) or "nobody yet"
    comment = f"{t.name}: {t.kind} of {t.owner}, read by {readers}.\n{TOPIC_NOTE[t.kind]}"
    return comment, {
        "apiVersion": "kafka.strimzi.io/v1",
        "kind": "KafkaTopic",
        "metadata": {"name": t.name, "labels": _labels(t.owner, "kafka-topic")},
        "spec": {
            "partitions": t.partitions,
            "replicas": REPLICAS,
            "config": {"min.insync.replicas": MIN_INSYNC, **TOPIC_CONFIG[t.kind]},
        },
    }


def _acl(kind: str, name: str, *operations: str) -> dict[str, Any]:
    return {"resource": Flow(type=kind, name=name, patternType="literal"),
            "operations": FlowList(operations)}


def _user(name: str, labels: dict[str, str], acls: list[dict[str, Any]]) -> dict[str, Any]:
    # SCRAM-SHA-512; the User Operator writes the password to a Secret of the
    # same name (key "password"). TLS is the Kafka listener's.
    return {
        "apiVersion": "kafka.strimzi.io/v1",
        "kind": "KafkaUser",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "authentication": {"type": "scram-sha-512"},
            "authorization": {"type": "simple", "acls": acls},
        },
    }


def service_user(service: str) -> Doc:
    own = {t.kind: t for t in topics_for(service)}
    acls = [
        _acl("topic", own["intake"].name, "Read", "Describe"),
        _acl("topic", own["events"].name, "Write", "Describe"),
        _acl("topic", own["dlq"].name, "Write", "Describe"),
    ]
    acls += [_acl("topic", t.name, "Read", "Describe")
             for t in consumed_by(service) if t.kind == "events"]
    acls += [_acl("group", group, "Read") for group, _ in consumer_groups(service)]
    subscribed = [t.name for t in consumed_by(service) if t.kind == "events"]
    comment = (f"The {service} service's Kafka identity: reads its intake, writes its events\n"
               "and dead letters"
               + (f", reads the events it subscribes to ({', '.join(subscribed)})"
                  if subscribed else "")
               + ".\nConsumer groups: its own name for the intake, <service>.<topic> for each"
               "\nsubscription.")
    return comment, _user(service, _labels(service, "service"), acls)


def institution_user_name(institution: Institution) -> str:
    return f"institution-{institution.id.lower()}"


def institution_user(institution: Institution) -> Doc:
    comment = (f"{institution.id} {institution.name} ({institution.kind.value}): its clinic\n"
               "terminals publish to the intake topics as this user, and may do nothing else.")
    labels = {**_labels(component="institution"), "yigongti/institution": institution.id}
    acls = [_acl("topic", t.name, "Write", "Describe") for t in intake_topics()]
    return comment, _user(institution_user_name(institution), labels, acls)


def lis_bridge_user_name(lab_centre: Institution) -> str:
    return f"lis-{lab_centre.id.lower()}"  # as its LIS terminal id (lis-<lab centre>)


def lis_bridge_user(lab_centre: Institution) -> Doc:
    comment = (f"The LIS bridge of {lab_centre.id} {lab_centre.name}: turns its analysers'\n"
               "HL7 results into lab intake, and writes nothing else.")
    labels = {**_labels(component="lis-bridge"), "yigongti/institution": lab_centre.id}
    return comment, _user(lis_bridge_user_name(lab_centre), labels,
                          [_acl("topic", "lab.intake.v1", "Write", "Describe")])


def dlq_tool_user() -> Doc:
    comment = ("The dead-letter tool (yigongti-dlq, in a service's toolbox): reads each\n"
               "service's dead letters, and the topics they came from (a copy cut for size is\n"
               "replayed from its source), without a consumer group. It writes nothing to\n"
               "Kafka: a replay runs through the service's own path and database.")
    sources = sorted({t.name for s in SERVICES for t in consumed_by(s)})
    acls = [_acl("topic", t.name, "Read", "Describe") for t in TOPICS if t.kind == "dlq"]
    acls += [_acl("topic", name, "Read", "Describe") for name in sources]
    return comment, _user(DLQ_TOOL_USER, _labels(DLQ_TOOL_USER, "tool"), acls)


def scaled_object(service: str) -> Doc:
    groups = consumer_groups(service)
    # A pod beyond the partitions of the widest topic it reads would sit idle.
    max_pods = max(t.partitions for _, t in groups)
    triggers = [{
        "type": "prometheus",
        "name": f"lag-{group.replace('.', '-')}",
        "metadata": {
            "serverAddress": PROMETHEUS,
            "query": f'sum(kafka_consumergroup_lag{{consumergroup="{group}",topic="{t.name}"}})',
            "threshold": str(LAG_PER_POD),
        },
    } for group, t in groups]
    comment = (f"Scales {service} on the lag of each consumer group it reads with, up to\n"
               f"the partitions ({max_pods}); KEDA owns the Deployment's replica count.")
    return comment, {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": service,
                     "labels": {"app.kubernetes.io/name": service,
                                "app.kubernetes.io/component": "service"}},
        "spec": {
            "scaleTargetRef": {"name": service},
            "minReplicaCount": MIN_PODS,
            "maxReplicaCount": max_pods,
            "pollingInterval": POLL_S,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                "scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_WINDOW_S}}}},
            "triggers": triggers,
        },
    }


# --- files --------------------------------------------------------------------

def alert_groups(deployed: tuple[str, ...]) -> list[dict[str, Any]]:
    groups = []
    for service in deployed:
        pairs = consumer_groups(service)
        groups.append(k8splatform.service_rules(
            service, [(g, t.name) for g, t in pairs], max(t.partitions for _, t in pairs),
            LAG_PER_POD, f"{service}.dlq.v1"))
    return groups


def render(deployed: tuple[str, ...] = DEPLOYED) -> dict[str, str]:
    """File name → content of every generated file. `deployed`: the services
    whose pods run (tests render all four)."""
    refdata = load()
    files = {}
    generators = []
    for service in SERVICES:
        docs = [topic_doc(t) for t in topics_for(service)] + [service_user(service)]
        if service in deployed:
            app = APPS[service]
            docs += k8sworkloads.workload(app) + [scaled_object(service)]
            files[f"{service}.env"] = env_file(
                f"Settings of the {service} service: ConfigMap {service}-config, its name\n"
                "hashed by kustomize, so a change here or in an overlay rolls the pods.",
                k8sworkloads.config(app))
            generators.append({
                "name": f"{service}-config", "envs": FlowList([f"{service}.env"]),
                "options": {"labels": Flow({"app.kubernetes.io/name": service,
                                            "app.kubernetes.io/component": "service",
                                            "yigongti/config": "service"})}})
        files[f"{service}.yaml"] = dump(docs)
    files["institutions.yaml"] = dump(institution_user(i) for i in refdata.institutions)
    files["tools.yaml"] = dump(
        [lis_bridge_user(c) for c in refdata.of_kind(Kind.lab_centre)] + [dlq_tool_user()])
    files["postgres.yaml"] = dump(k8splatform.postgres(list(deployed)))
    files["monitoring.yaml"] = dump([k8splatform.pod_monitor(),
                                     k8splatform.prometheus_rule(alert_groups(deployed))])
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "resources": sorted(n for n in files if n.endswith(".yaml")),
                     "configMapGenerator": generators}
    files["kustomization.yaml"] = dump(
        [("The generated objects; k8s/base/kustomization.yaml includes this directory.",
          kustomization)])
    return files


def differences(out: Path = OUT) -> list[str]:
    """The files under `out` that are missing, stale or not generated."""
    wanted = render()
    present = {p.name for p in out.glob("*")} if out.is_dir() else set()
    return sorted(
        [name for name, text in wanted.items()
         if name not in present or (out / name).read_text("utf-8") != text]
        + [name for name in present - set(wanted)])


def write(out: Path = OUT, deployed: tuple[str, ...] = DEPLOYED) -> None:
    out.mkdir(parents=True, exist_ok=True)
    wanted = render(deployed)
    for path in out.glob("*"):
        if path.name not in wanted:
            path.unlink()
    for name, text in wanted.items():
        (out / name).write_text(text, "utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yigongti_deploy.k8sgen",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the files differ")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.check:
        stale = differences(args.out)
        for name in stale:
            print(f"{args.out / name}: differs from the generator's output", file=sys.stderr)
        if stale:
            print("run: python -m yigongti_deploy.k8sgen", file=sys.stderr)
        return 1 if stale else 0
    write(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

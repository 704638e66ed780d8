"""What the services share: the PostgreSQL cluster (CloudNativePG) with its
backups, and monitoring (the Prometheus scrape of every service's metrics port
and the alerts).

One CloudNativePG Cluster holds a database per service, each owned by that
service's DatabaseRole (k8sworkloads): one set of instances, backups and
failover to run, and pg_hba lets a role into its own database only. One
Cluster per service would isolate load and restores further, at three
instances per service. The Cluster lives in the services' namespace so the
CA and the client certificates CloudNativePG writes are Secrets the pods can
mount (Kubernetes cannot reference a Secret of another namespace)."""

from __future__ import annotations

from typing import Any

from .k8sworkloads import (
    MONITORING_NAMESPACE,
    PG_CLUSTER,
    UNROUTABLE,
    Egress,
    _namespace,
)
from .k8syaml import Doc, Flow, FlowList

# CloudNativePG v1.30.0's default image (pkg/versions/versions.go at that tag).
PG_IMAGE = "ghcr.io/cloudnative-pg/postgresql:18.4-system-trixie"
CNPG_NAMESPACE = "cnpg-system"  # the operator (and the Barman Cloud plugin)
BARMAN_PLUGIN = "barman-cloud.cloudnative-pg.io"
BACKUP_STORE = f"{PG_CLUSTER}-backups"
BACKUP_SCHEDULE = "0 0 2 * * *"  # daily 02:00 (CloudNativePG's six-field cron); assumed
BACKUP_RETENTION = "30d"  # assumed: a month of point-in-time recovery
OBJECT_STORE = Egress("backups", 443, "the object store of the database backups (S3 API)")
API_SERVER = Egress("apiserver", 6443, "the Kubernetes API server (CloudNativePG's instance "
                    "manager reads and updates its Cluster)")


def _meta(name: str, component: str) -> dict[str, Any]:
    return {"name": name, "labels": Flow({"app.kubernetes.io/name": name,
                                          "app.kubernetes.io/component": component})}


def cluster(deployed: list[str]) -> Doc:
    hba = [f"hostssl {s} {s} all cert" for s in deployed]
    comment = ("PostgreSQL for every service: three instances (one primary, two standbys),\n"
               "TLS always (CloudNativePG's CA, Secret yigongti-pg-ca). Each service's role logs\n"
               "in with its client certificate, to its own database only (pg_hba); no\n"
               "superuser access from outside. WAL archiving and base backups to the object\n"
               f"store through the Barman Cloud plugin (ObjectStore {BACKUP_STORE}).")
    return comment, {
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": _meta(PG_CLUSTER, "database"),
        "spec": {
            "instances": 3,
            "imageName": PG_IMAGE,
            "primaryUpdateStrategy": "unsupervised",
            "enableSuperuserAccess": False,
            "storage": Flow(size="20Gi"),
            "resources": {"requests": Flow(cpu="500m", memory="1Gi"),
                          "limits": Flow(cpu="2", memory="2Gi")},
            "postgresql": {"pg_hba": hba},
            "plugins": [{"name": BARMAN_PLUGIN, "isWALArchiver": True,
                         "parameters": Flow(barmanObjectName=BACKUP_STORE)}],
        },
    }


def object_store() -> Doc:
    comment = ("Where the backups go: an S3-compatible store (the hospital's, e.g. MinIO);\n"
               "overlays set the endpoint. Credentials: Secret yigongti-pg-backups, made by\n"
               "whoever runs the store (deploy/README.md, step 2).")
    return comment, {
        "apiVersion": "barmancloud.cnpg.io/v1", "kind": "ObjectStore",
        "metadata": _meta(BACKUP_STORE, "database"),
        "spec": {
            "retentionPolicy": BACKUP_RETENTION,
            "configuration": {
                "destinationPath": f"s3://{BACKUP_STORE}/",
                "endpointURL": "https://objects.hospital.example",
                "s3Credentials": {
                    "accessKeyId": Flow(name=BACKUP_STORE, key="ACCESS_KEY_ID"),
                    "secretAccessKey": Flow(name=BACKUP_STORE, key="ACCESS_SECRET_KEY"),
                },
                "wal": Flow(compression="gzip"),
                "data": Flow(compression="gzip"),
            },
        },
    }


def scheduled_backup() -> Doc:
    return ("A base backup every night; with the archived WAL, any moment since the oldest\n"
            f"kept backup ({BACKUP_RETENTION}) can be restored (deploy/README.md: restore).", {
                "apiVersion": "postgresql.cnpg.io/v1", "kind": "ScheduledBackup",
                "metadata": _meta(f"{PG_CLUSTER}-nightly", "database"),
                "spec": {"cluster": Flow(name=PG_CLUSTER), "schedule": BACKUP_SCHEDULE,
                         "backupOwnerReference": "self", "method": "plugin",
                         "pluginConfiguration": Flow(name=BARMAN_PLUGIN)}})


def _instances() -> dict[str, Any]:
    return {"podSelector": {"matchLabels": Flow({"cnpg.io/cluster": PG_CLUSTER})}}


def postgres_policy() -> Doc:
    comment = ("In: the services and their toolboxes (label yigongti/database-client), the\n"
               "other instances (replication), the operator (status port 8000, and 5432), and\n"
               "Prometheus (9187). Out: the other instances; the API server and the object\n"
               "store by address (postgres-apiserver, postgres-backups).")
    tcp = lambda *ports: [Flow(protocol="TCP", port=p) for p in ports]  # noqa: E731
    return comment, {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _meta(PG_CLUSTER, "database"),
        "spec": {
            **_instances(),
            "policyTypes": FlowList(["Ingress", "Egress"]),
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": Flow(
                    {"yigongti/database-client": "true"})}}], "ports": tcp(5432)},
                {"from": [_instances()], "ports": tcp(5432, 8000)},
                {"from": [{**_namespace(CNPG_NAMESPACE), "podSelector": {"matchLabels": Flow(
                    {"app.kubernetes.io/name": "cloudnative-pg"})}}], "ports": tcp(8000, 5432)},
                {"from": [_namespace(MONITORING_NAMESPACE)], "ports": tcp(9187)},
            ],
            "egress": [{"to": [_instances()], "ports": tcp(5432, 8000)}],
        },
    }


def postgres_egress(egress: Egress) -> Doc:
    return (f"Out from the PostgreSQL instances to {egress.what}: overlays set the range\n"
            "(TEST-NET until then, which reaches nothing).", {
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": _meta(f"postgres-{egress.name}", "database"),
                "spec": {**_instances(), "policyTypes": FlowList(["Egress"]),
                         "egress": [{"to": [{"ipBlock": Flow(cidr=UNROUTABLE)}],
                                     "ports": [Flow(protocol="TCP", port=egress.port)]}]}})


def postgres(deployed: list[str]) -> list[Doc]:
    return [cluster(deployed), object_store(), scheduled_backup(), postgres_policy(),
            postgres_egress(API_SERVER), postgres_egress(OBJECT_STORE)]


# --- monitoring -----------------------------------------------------------------

def pod_monitor() -> Doc:
    comment = ("Prometheus (prometheus-operator) scrapes every service pod's metrics port\n"
               "(METRICS_PORT, never routed by an Ingress); `service` names the service.")
    return comment, {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
        "metadata": _meta("yigongti-services", "monitoring"),
        "spec": {
            "selector": {"matchLabels": Flow({"app.kubernetes.io/component": "service"})},
            "podMetricsEndpoints": [{
                "port": "metrics", "path": "/metrics", "interval": "30s",
                "relabelings": [{"sourceLabels": FlowList(
                    ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]),
                    "targetLabel": "service"}],
            }],
        },
    }


# Thresholds (assumed: starting points, tuned per site from what the alerts show).
OUTBOX_BACKLOG = 1000  # unsent events: the relay or the broker cannot keep up
LAG_MINUTES = 10  # lag beyond what the scaler's most pods clear, this long


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, runbook: str
           ) -> dict[str, Any]:
    rule = {"alert": name, "expr": expr}
    if for_ != "0m":
        rule["for"] = for_
    rule["labels"] = Flow(severity=severity)
    rule["annotations"] = {"summary": summary, "runbook": f"deploy/README.md#{runbook}"}
    return rule


def service_rules(service: str, groups: list[tuple[str, str]], max_pods: int,
                  lag_per_pod: int, dlq_topic: str) -> dict[str, Any]:
    """Alerts of one service; `groups` are its (consumer group, topic) pairs."""
    s = f'service="{service}"'
    rules = []
    for group, topic in groups:
        sel = f'consumergroup="{group}",topic="{topic}"'
        rules.append(_alert(
            "YigongtiConsumerLag", f"sum(kafka_consumergroup_lag{{{sel}}}) > "
            f"{max_pods * lag_per_pod}", f"{LAG_MINUTES}m", "warning",
            f"{service} is more than {max_pods * lag_per_pod} records behind on {topic} "
            f"(group {group}) with all {max_pods} pods", "8-what-to-watch"))
    dlq = f'topic="{dlq_topic}"'
    depth = (f"sum(kafka_topic_partition_current_offset{{{dlq}}}) - "
             f"sum(kafka_topic_partition_oldest_offset{{{dlq}}})")
    rules += [
        _alert("YigongtiDeadLetters", f"{depth} > 0", "0m", "warning",
               f"{dlq_topic} holds dead letters (they stay until retention removes them: "
               "silence once each is replayed or judged)", "7-dead-letters-and-refused-rows"),
        _alert("YigongtiOutboxBacklog", f"max(yigongti_outbox_backlog{{{s}}}) > {OUTBOX_BACKLOG}",
               "10m", "warning", f"{service} has more than {OUTBOX_BACKLOG} events waiting to be "
               "published", "8-what-to-watch"),
        _alert("YigongtiOutboxRefusedRows", f"max(yigongti_outbox_refused_rows{{{s}}}) > 0",
               "0m", "critical", f"the broker refused {service} outbox rows for good: resend "
               "them once the cause is removed", "7-dead-letters-and-refused-rows"),
        _alert("YigongtiNoRelayLeading",
               f"sum(max_over_time(yigongti_relay_leading{{{s}}}[2m])) < 1 "
               f"or absent(yigongti_relay_leading{{{s}}})", "5m", "critical",
               f"no {service} pod publishes its outbox (no relay holds the lead)",
               "8-what-to-watch"),
        _alert("YigongtiBrokerDown", f"max(yigongti_broker_up{{{s}}}) < 1", "5m", "critical",
               f"{service} cannot reach Kafka", "8-what-to-watch"),
    ]
    if service == "lab":
        rules += [
            _alert("YigongtiCriticalValueEscalated",
                   "sum(increase(lab_critical_escalations_total[10m])) > 0", "0m", "critical",
                   "a critical value went unacknowledged past its escalation interval: the "
                   "next person on the roster is being called", "8-what-to-watch"),
            _alert("YigongtiTurnaroundBreaches",
                   "sum(increase(lab_turnaround_breaches_total[1h])) > 0", "0m", "info",
                   "lab results were verified over their turnaround target in the last hour",
                   "8-what-to-watch"),
        ]
    return {"name": f"yigongti-{service}", "rules": rules}


def prometheus_rule(groups: list[dict[str, Any]]) -> Doc:
    comment = ("Alerts (deploy/README.md, step 8). Kafka figures come from Strimzi's Kafka\n"
               "Exporter, the others from the services' own metrics (PodMonitor above).")
    return comment, {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
        "metadata": _meta("yigongti", "monitoring"),
        "spec": {"groups": groups},
    }

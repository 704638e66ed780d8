"""A terminal (or any client on the kit's library) connects to the production
brokers with settings from its environment, the same names the services use:
an institution's KafkaUser over SCRAM and TLS, verified by the Kafka CA
(deploy/README.md, step 3)."""

from __future__ import annotations

import datetime

from aiokafka import AIOKafkaProducer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from yigongti_kit.intake_auth import TerminalSigner
from yigongti_kit.settings import KitSettings, kafka_client_kwargs
from yigongti_kit.terminal import TerminalClient


def _ca(path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cluster-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


async def test_a_terminal_connects_as_its_institution_over_scram_and_tls(monkeypatch, tmp_path):
    ca = _ca(tmp_path / "ca.crt")
    for name, value in {
        "KAFKA_BOOTSTRAP_SERVERS": "kafka.hospital.example:9094",
        "KAFKA_BROKER_KIND": "kafka",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "institution-652325-b01",
        "KAFKA_SASL_PASSWORD": "from-the-strimzi-secret",
        "KAFKA_SSL_CAFILE": str(ca),
    }.items():
        monkeypatch.setenv(name, value)
    kwargs = kafka_client_kwargs(KitSettings(), "producer")
    assert kwargs["bootstrap_servers"] == "kafka.hospital.example:9094"
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "institution-652325-b01"
    assert kwargs["sasl_plain_password"] == "from-the-strimzi-secret"
    assert [c["subject"] for c in kwargs["ssl_context"].get_ca_certs()] == [
        ((("commonName", "cluster-ca"),),)]
    assert kwargs["acks"] == "all" and kwargs["enable_idempotence"] is True
    # the library's client takes the producer these make (built, not started: no broker here)
    producer = AIOKafkaProducer(**kwargs)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    client = TerminalClient(TerminalSigner("t-652325-b01-1", pem), producer, "lab.intake.v1")
    assert client.topic == "lab.intake.v1"

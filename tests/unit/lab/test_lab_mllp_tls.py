"""The analyser port over TLS (MLLP_TLS_*) and the listener's Kafka identity
(LIS_KAFKA_SASL_*): a LIS host with a client certificate of the configured CA
gets its ACK over TLS; one without is refused in the handshake; a peer off
MLLP_ALLOWED_PEERS never gets a handshake. The listener publishes as the LIS
bridge's Kafka user, which may write the lab's intake."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from yigongti_kit.settings import KitSettings, kafka_client_kwargs
from yigongti_lab.config import LabSettings
from yigongti_lab.hl7_listener import producer_settings
from yigongti_lab.hl7_results import ResultsTranslator
from yigongti_lab.mllp import (
    END_BLOCK,
    START_BLOCK,
    MllpLimits,
    networks,
    start_mllp_server,
    stop_mllp_server,
)


def _cert(cn, key, issuer, issuer_key, *, ca, ip=None):
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, obj) -> Path:
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(obj.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("mllp-pki")
    ca, server, client = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    return {
        "ca.crt": _write(d / "ca.crt", _cert("lab centre CA", ca, "lab centre CA", ca, ca=True)),
        "tls.crt": _write(d / "tls.crt", _cert("mllp", server, "lab centre CA", ca, ca=False,
                                                 ip="127.0.0.1")),
        "tls.key": _write(d / "tls.key", server),
        "client.crt": _write(d / "client.crt", _cert("lis-host", client, "lab centre CA", ca,
                                                       ca=False)),
        "client.key": _write(d / "client.key", client),
    }


class Publisher:
    async def publish(self, event, **kwargs) -> str:  # pragma: no cover - not reached
        raise AssertionError("nothing valid is sent in these tests")


async def _serve(pki, peers=("127.0.0.1/32",)):
    settings = LabSettings(mllp_tls_cert_file=str(pki["tls.crt"]),
                           mllp_tls_key_file=str(pki["tls.key"]),
                           mllp_tls_client_ca_file=str(pki["ca.crt"]))
    return await start_mllp_server(
        "127.0.0.1", 0, translator=ResultsTranslator(facility="652325-L01"),
        publisher=Publisher(), limits=MllpLimits(allowed_peers=networks(peers)),
        tls=settings.mllp_tls())


def _client(pki, *, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki["ca.crt"])
    if with_certificate:
        context.load_cert_chain(pki["client.crt"], pki["client.key"])
    return context


async def _exchange(port: int, context: ssl.SSLContext) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        writer.write(START_BLOCK + b"not HL7 at all\r" + END_BLOCK + b"\r")
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.readuntil(END_BLOCK + b"\r")
    finally:
        writer.close()


async def test_a_lis_host_with_a_client_certificate_is_answered_over_tls(pki):
    server = await _serve(pki)
    try:
        answer = await _exchange(server.sockets[0].getsockname()[1],
                                 _client(pki, with_certificate=True))
        assert answer.startswith(START_BLOCK + b"MSH|")  # an ACK, over TLS
    finally:
        await stop_mllp_server(server)


async def test_a_host_without_a_client_certificate_is_refused(pki):
    server = await _serve(pki)
    try:
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await _exchange(server.sockets[0].getsockname()[1],
                            _client(pki, with_certificate=False))
    finally:
        await stop_mllp_server(server)


async def test_a_peer_off_the_list_gets_no_handshake(pki):
    server = await _serve(pki, peers=("192.0.2.1/32",))
    try:
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await _exchange(server.sockets[0].getsockname()[1],
                            _client(pki, with_certificate=True))
    finally:
        await stop_mllp_server(server)


def test_tls_settings_come_in_pairs(pki):
    assert LabSettings().mllp_tls() is None
    with pytest.raises(ValueError, match="go together"):
        LabSettings(mllp_tls_cert_file=str(pki["tls.crt"])).mllp_tls()
    with pytest.raises(ValueError, match="needs"):
        LabSettings(mllp_tls_client_ca_file=str(pki["ca.crt"])).mllp_tls()


def test_the_listener_publishes_as_the_lis_bridge_user():
    kit = KitSettings(service_name="lab", kafka_security_protocol="SASL_PLAINTEXT",
                      kafka_sasl_username="lab", kafka_sasl_password="lab-secret")
    lab = LabSettings(lis_kafka_sasl_username="lis-652325-l01",
                      lis_kafka_sasl_password="lis-secret")
    kwargs = kafka_client_kwargs(producer_settings(kit, lab), "producer")
    assert kwargs["sasl_plain_username"] == "lis-652325-l01"
    assert kwargs["sasl_plain_password"] == "lis-secret"
    # without LIS_KAFKA_SASL_USERNAME it stays the service's own
    assert kafka_client_kwargs(producer_settings(kit, LabSettings()), "producer")[
        "sasl_plain_username"] == "lab"
    assert "lis-secret" not in repr(lab)

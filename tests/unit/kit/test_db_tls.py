"""TLS to PostgreSQL (DB_SSLMODE, DB_SSLROOTCERT, DB_SSLCERT, DB_SSLKEY): the
settings put them where asyncpg reads them, and with verify-full a connection
is refused unless the server shows a certificate of our CA naming the host it
was asked for. The server here is a stand-in that answers PostgreSQL's
SSLRequest and does the TLS handshake, no more: enough to see what the client
accepts, without a database."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError
from yigongti_kit.settings import KitSettings, redact_url

SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")


# --- settings -------------------------------------------------------------------

def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def test_tls_settings_go_into_the_database_url(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://lab@pg-rw.yigongti.svc:5432/lab?sslmode=prefer")
    monkeypatch.setenv("DB_SSLMODE", "verify-full")
    monkeypatch.setenv("DB_SSLROOTCERT", "/etc/postgres-ca/ca.crt")
    monkeypatch.setenv("DB_SSLCERT", "/etc/postgres-client/tls.crt")
    monkeypatch.setenv("DB_SSLKEY", "/etc/postgres-client/tls.key")
    url = KitSettings(service_name="lab").database_url
    assert query(url) == {"sslmode": ["verify-full"], "sslrootcert": ["/etc/postgres-ca/ca.crt"],
                          "sslcert": ["/etc/postgres-client/tls.crt"],
                          "sslkey": ["/etc/postgres-client/tls.key"]}
    assert urlsplit(url).path == "/lab" and urlsplit(url).username == "lab"


def test_without_tls_settings_the_url_is_untouched():
    url = "postgresql://u:secret@db:5432/x?application_name=a"
    assert KitSettings(database_url=url).database_url == url


def test_a_password_stays_masked_with_tls_settings():
    s = KitSettings(database_url="postgresql://u:secret@db/x", db_sslmode="require")
    assert "secret" not in repr(s) and "secret" not in redact_url(s.database_url)


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_verifying_without_a_ca_is_refused_at_start(mode):
    with pytest.raises(ValidationError, match="DB_SSLROOTCERT"):
        KitSettings(db_sslmode=mode)


def test_a_client_certificate_needs_its_key():
    with pytest.raises(ValidationError, match="DB_SSLKEY"):
        KitSettings(db_sslcert="/c.crt")


# --- what asyncpg accepts -------------------------------------------------------

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool, hosts=()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(h)) if h[0].isdigit() else x509.DNSName(h)
             for h in hosts]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """Our CA, another CA, and a server certificate of ours for 127.0.0.1 only."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, other_key, server_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    files = {
        "ca.crt": _pem(_cert("our CA", ca_key, "our CA", ca_key, ca=True)),
        "other-ca.crt": _pem(_cert("other CA", other_key, "other CA", other_key, ca=True)),
        "server.crt": _pem(_cert("pg", server_key, "our CA", ca_key, ca=False,
                                 hosts=["127.0.0.1"])),
        "server.key": _pem(server_key),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    return {name: d / name for name in files}


class StandIn:
    """Answers SSLRequest with 'S' (or 'N') and records whether a TLS session
    was set up; then hangs up (the client sees a closed connection)."""

    def __init__(self, pki: dict[str, Path], offer_tls: bool = True):
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(pki["server.crt"], pki["server.key"])
        self.offer_tls = offer_tls
        self.handshakes = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if await reader.readexactly(8) != SSL_REQUEST:
                return
            writer.write(b"S" if self.offer_tls else b"N")
            await writer.drain()
            if self.offer_tls:
                await writer.start_tls(self.context)
                self.handshakes += 1
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def attempt(pki, *, host: str, offer_tls: bool = True, ca: str | None = "ca.crt",
                  mode: str = "verify-full") -> tuple[BaseException, int]:
    stand_in = StandIn(pki, offer_tls)
    server = await asyncio.start_server(stand_in.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = KitSettings(database_url=f"postgresql://lab@{host}:{port}/lab",
                           db_sslmode=mode, db_sslrootcert=pki[ca] if ca else None)
    try:
        with pytest.raises(BaseException) as caught:
            await asyncpg.connect(settings.database_url, timeout=5)
    finally:
        server.close()
        await server.wait_closed()
    return caught.value, stand_in.handshakes


async def test_verify_full_goes_through_with_our_ca_and_the_right_host(pki):
    error, handshakes = await attempt(pki, host="127.0.0.1")
    assert handshakes == 1  # the TLS session was set up; the stand-in then hung up
    assert not isinstance(error, ssl.SSLCertVerificationError)


async def test_verify_full_refuses_a_certificate_of_another_ca(pki):
    error, handshakes = await attempt(pki, host="127.0.0.1", ca="other-ca.crt")
    assert isinstance(error, ssl.SSLCertVerificationError) and handshakes == 0


async def test_verify_full_refuses_a_certificate_for_another_host(pki):
    # localhost reaches the same server, whose certificate names 127.0.0.1 only
    error, _ = await attempt(pki, host="localhost")
    assert isinstance(error, ssl.SSLCertVerificationError)
    assert "localhost" in str(error)


async def test_verify_full_never_falls_back_to_plain_text(pki):
    error, _ = await attempt(pki, host="127.0.0.1", offer_tls=False)
    assert "rejected SSL upgrade" in str(error)


async def test_without_verification_any_certificate_would_do(pki):
    """The control: sslmode=require without a CA takes whatever certificate the
    server shows (so would an unset DB_SSLMODE, asyncpg's prefer)."""
    error, handshakes = await attempt(pki, host="localhost", ca=None, mode="require")
    assert handshakes == 1 and not isinstance(error, ssl.SSLCertVerificationError)

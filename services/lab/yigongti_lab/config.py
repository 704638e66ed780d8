"""The lab service's own settings (beside the kit's KitSettings), from the environment."""

from __future__ import annotations

import ssl

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .mllp import (
    IDLE_TIMEOUT_S,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_PEER,
    MAX_FRAME_BYTES,
    MESSAGE_TIMEOUT_S,
    MllpLimits,
    networks,
)


class LabSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    mllp_host: str = Field("127.0.0.1", description="MLLP_HOST: where analysers connect.")
    mllp_port: int | None = Field(
        None, description="MLLP_PORT: HL7 v2 MLLP listener for analysers (none when unset).")
    lis_terminal_id: str | None = Field(
        None, description="LIS_TERMINAL_ID: the bridge's terminal id, registered in "
                          "TERMINALS_FILE under the lab centre's institution.")
    lis_terminal_key_file: str | None = Field(
        None, description="LIS_TERMINAL_KEY_FILE: the bridge's Ed25519 private key (PEM).")
    lab_centre: str = Field("", description="LAB_CENTRE: the centre's institution id (HL7 MSH).")
    lis_kafka_sasl_username: str | None = Field(
        None, description="LIS_KAFKA_SASL_USERNAME: the Kafka user the listener publishes as "
                          "(the LIS bridge's, lis-<centre>, which may write lab.intake.v1; "
                          "the service's own user may only read it). Unset: the service's.")
    lis_kafka_sasl_password: SecretStr | None = Field(
        None, description="LIS_KAFKA_SASL_PASSWORD: its password (masked, never logged).")
    mllp_tls_cert_file: str | None = Field(
        None, description="MLLP_TLS_CERT_FILE: the listener's certificate (PEM); with "
                          "MLLP_TLS_KEY_FILE the port speaks TLS only.")
    mllp_tls_key_file: str | None = Field(
        None, description="MLLP_TLS_KEY_FILE: the private key of MLLP_TLS_CERT_FILE (PEM).")
    mllp_tls_client_ca_file: str | None = Field(
        None, description="MLLP_TLS_CLIENT_CA_FILE: CA of the LIS hosts' client certificates; "
                          "set, a peer without one it signed is refused.")
    # The analyser port's limits (mllp.py; the defaults are assumed, see there).
    mllp_allowed_peers: str = Field(
        "127.0.0.0/8,::1/128",
        description="MLLP_ALLOWED_PEERS: addresses or networks of the analysers and LIS hosts, "
                    "comma-separated; '*' admits any peer. Others are closed unread.")
    mllp_analysers: str = Field(
        "", description="MLLP_ANALYSERS: MSH-3 or MSH-3^MSH-4 of the analysers taken, "
                        "comma-separated; empty takes any sender from an allowed peer.")
    mllp_max_message_bytes: int = Field(
        MAX_FRAME_BYTES, gt=0, description="MLLP_MAX_MESSAGE_BYTES: a larger message is "
                                           "refused (AR).")
    mllp_message_timeout_s: float = Field(
        MESSAGE_TIMEOUT_S, gt=0, description="MLLP_MESSAGE_TIMEOUT_S: from a message's start "
                                             "block to its end block; also for reading an ACK.")
    mllp_idle_timeout_s: float = Field(
        IDLE_TIMEOUT_S, gt=0, description="MLLP_IDLE_TIMEOUT_S: a silent connection is closed.")
    mllp_max_connections_per_peer: int = Field(
        MAX_CONNECTIONS_PER_PEER, gt=0,
        description="MLLP_MAX_CONNECTIONS_PER_PEER: open connections of one address.")
    mllp_max_connections: int = Field(
        MAX_CONNECTIONS, gt=0, description="MLLP_MAX_CONNECTIONS: open connections in all.")

    def mllp_limits(self) -> MllpLimits:
        peers = self.mllp_allowed_peers.split(",")
        return MllpLimits(
            max_message_bytes=self.mllp_max_message_bytes,
            idle_timeout_s=self.mllp_idle_timeout_s,
            message_timeout_s=self.mllp_message_timeout_s,
            max_connections_per_peer=self.mllp_max_connections_per_peer,
            max_connections=self.mllp_max_connections,
            allowed_peers=None if [p.strip() for p in peers] == ["*"] else networks(peers),
        )

    def mllp_tls(self) -> ssl.SSLContext | None:
        """The listener's TLS context, or None (plain MLLP) when no certificate is set."""
        if not (self.mllp_tls_cert_file or self.mllp_tls_key_file):
            if self.mllp_tls_client_ca_file:
                raise ValueError("MLLP_TLS_CLIENT_CA_FILE needs MLLP_TLS_CERT_FILE and "
                                 "MLLP_TLS_KEY_FILE")
            return None
        if not (self.mllp_tls_cert_file and self.mllp_tls_key_file):
            raise ValueError("MLLP_TLS_CERT_FILE and MLLP_TLS_KEY_FILE go together")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.mllp_tls_cert_file, self.mllp_tls_key_file)
        if self.mllp_tls_client_ca_file:
            context.load_verify_locations(cafile=self.mllp_tls_client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def mllp_senders(self) -> list[str] | None:
        senders = [s.strip() for s in self.mllp_analysers.split(",") if s.strip()]
        return senders or None

"""Where the terminal's key, services and queue are: `<home>/terminal.yaml`.

The home directory is YIGONGTI_HOME, else ~/.yigongti. The file:

    terminal_id: demo-terminal-1          # as registered with the services
    institution_id: 652325-B01            # the clinic the terminal belongs to
    key_file: terminal.key                # Ed25519 private key, PEM (relative to home)
    user_id: nurse-3                      # who works at it (collector_id, received_by...)
    kafka:
      bootstrap: county.example:9092
      broker_kind: kafka                  # or "embedded" (the test broker)
      topic_prefix: ""
      route: {}                           # "advertised host:port" -> "host:port" (a tunnel)
    services:                             # each service's HTTP base URL
      lab: https://lab.county.example
    tokens:                               # each service's bearer token, a file (relative to home)
      lab: lab.token
    send_timeout_s: 10

Nothing in it is personal data; the queue (outbox.sqlite) sits beside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_FILE = "terminal.yaml"
QUEUE_FILE = "outbox.sqlite"


class ConfigError(Exception):
    """The terminal is not set up (a file or setting is missing)."""


def default_home() -> Path:
    return Path(os.environ.get("YIGONGTI_HOME") or Path.home() / ".yigongti")


@dataclass
class TerminalConfig:
    home: Path
    terminal_id: str
    institution_id: str
    key_file: Path
    user_id: str
    kafka_bootstrap: str
    kafka_broker_kind: str = "kafka"
    topic_prefix: str = ""
    broker_route: dict[str, str] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, Path] = field(default_factory=dict)
    send_timeout_s: float = 10.0

    @property
    def queue_path(self) -> Path:
        return self.home / QUEUE_FILE

    def private_key_pem(self) -> str:
        try:
            return self.key_file.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read the terminal key {self.key_file}") from exc

    def token(self, service: str) -> str:
        path = self.tokens.get(service)
        if path is None:
            raise ConfigError(f"no token for the {service} service in {self.home / CONFIG_FILE}")
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the {service} token {path}") from exc

    def url(self, service: str) -> str:
        url = self.services.get(service)
        if not url:
            raise ConfigError(f"no address for the {service} service in "
                              f"{self.home / CONFIG_FILE}")
        return url.rstrip("/")

    def to_yaml(self) -> dict[str, Any]:
        return {
            "terminal_id": self.terminal_id, "institution_id": self.institution_id,
            "key_file": str(self.key_file), "user_id": self.user_id,
            "kafka": {"bootstrap": self.kafka_bootstrap, "broker_kind": self.kafka_broker_kind,
                      "topic_prefix": self.topic_prefix, "route": dict(self.broker_route)},
            "services": dict(self.services),
            "tokens": {k: str(v) for k, v in self.tokens.items()},
            "send_timeout_s": self.send_timeout_s,
        }

    def save(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / CONFIG_FILE
        path.write_text(yaml.safe_dump(self.to_yaml(), sort_keys=False))
        return path


def load(home: Path | None = None) -> TerminalConfig:
    home = Path(home) if home else default_home()
    path = home / CONFIG_FILE
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"this terminal is not set up: {path} is missing") from exc
    kafka = data.get("kafka") or {}

    def rel(p: str) -> Path:
        return p if (p := Path(p)).is_absolute() else home / p

    try:
        return TerminalConfig(
            home=home,
            terminal_id=data["terminal_id"],
            institution_id=data["institution_id"],
            key_file=rel(data["key_file"]),
            user_id=data["user_id"],
            kafka_bootstrap=kafka["bootstrap"],
            kafka_broker_kind=kafka.get("broker_kind", "kafka"),
            topic_prefix=kafka.get("topic_prefix", "") or "",
            broker_route=dict(kafka.get("route") or {}),
            services=dict(data.get("services") or {}),
            tokens={k: rel(v) for k, v in (data.get("tokens") or {}).items()},
            send_timeout_s=float(data.get("send_timeout_s", 10.0)),
        )
    except KeyError as exc:
        raise ConfigError(f"{path} lacks the setting {exc.args[0]}") from None

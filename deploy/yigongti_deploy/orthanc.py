"""The county PACS on one machine: our own Orthanc with its DICOMweb plugin.

`EmbeddedOrthanc` runs the Debian package's binary (`orthanc`) with the
package's plugin (`orthanc-dicomweb`), the way `EmbeddedBroker` runs Tansu: a
JSON config written to the run dir, storage in the run dir, a free loopback
port, the log in `<run_dir>/orthanc.log`. The system daemon the package
installs is stopped and disabled by `make setup` (target `orthanc`); we never
use it or its ports 4242/8042.

Access: no authentication by default. Orthanc refuses every client that is not
on loopback (`RemoteAccessAllowed: false`) and its DICOM (DIMSE) port is off,
so only processes on this machine reach it, as with the embedded broker and the
trust-auth PostgreSQL; the data are pydicom's public samples. The URL is then
the whole contract (PACS_DICOMWEB_URL). `users=` turns on HTTP basic auth, to
prove the client's credentials path (PACS_USERNAME / PACS_PASSWORD) that a real
county PACS needs.

Measured on the 2-core dev machine (Orthanc 1.10.1, DICOMweb plugin 1.7): it
answers with the plugin loaded 0.13-0.22 s after spawn; SIGTERM takes ~2.5 s
(Orthanc's own HTTP server shutdown, whatever the keep-alive or thread settings).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from .embedded import free_port, stop_process

log = logging.getLogger("yigongti.orthanc")

# Where the Debian packages put the server and the plugin (dpkg -L orthanc orthanc-dicomweb);
# ORTHANC_BIN / ORTHANC_DICOMWEB_PLUGIN point elsewhere (another distribution, a build).
DEBIAN_BINARY = "/usr/sbin/Orthanc"
DEBIAN_DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
DICOMWEB_ROOT = "/dicom-web/"

# The environment variables a service reads to reach the PACS.
URL_ENV = "PACS_DICOMWEB_URL"
USERNAME_ENV = "PACS_USERNAME"
PASSWORD_ENV = "PACS_PASSWORD"


@dataclass(frozen=True)
class OrthancInstall:
    binary: str
    plugin: str


class OrthancMissing(RuntimeError):
    """The Orthanc binary or its DICOMweb plugin is not installed."""


def find_orthanc() -> OrthancInstall | None:
    """The installed server and DICOMweb plugin, or None when either is missing."""
    binary = os.environ.get("ORTHANC_BIN") or shutil.which("Orthanc") or DEBIAN_BINARY
    plugin = os.environ.get("ORTHANC_DICOMWEB_PLUGIN") or DEBIAN_DICOMWEB_PLUGIN
    if os.access(binary, os.X_OK) and Path(plugin).is_file():
        return OrthancInstall(binary, plugin)
    return None


def require_orthanc() -> OrthancInstall:
    found = find_orthanc()
    if found is None:
        raise OrthancMissing(
            "Orthanc and its DICOMweb plugin are not installed: on Debian/Ubuntu run "
            "`make setup` as root (apt-get install orthanc orthanc-dicomweb), elsewhere "
            "set ORTHANC_BIN and ORTHANC_DICOMWEB_PLUGIN (see README)"
        )
    return found


def pacs_env(url: str, username: str | None = None, password: str | None = None) -> dict[str, str]:
    """The environment variables that point a service at a PACS."""
    env = {URL_ENV: url}
    if username:
        env[USERNAME_ENV] = username
        env[PASSWORD_ENV] = password or ""
    return env


class EmbeddedOrthanc:
    """Orthanc on a free port, storage in `<run_dir>/orthanc-storage`.

    `url` is the DICOMweb root (`http://127.0.0.1:<port>/dicom-web`); `rest_url`
    Orthanc's own REST API (uploads in tests and the demo). Storage survives
    `stop()` (it is in the run dir); a new instance on a fresh run dir is empty.
    """

    def __init__(
        self,
        run_dir: Path | str,
        port: int | None = None,
        *,
        users: Mapping[str, str] | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.port = port
        self.users = dict(users or {})
        self.log_path = self.run_dir / "orthanc.log"
        self.config_path = self.run_dir / "orthanc.json"
        self.storage_dir = self.run_dir / "orthanc-storage"
        self.started_in_s: float | None = None
        self.version: str | None = None
        self.plugin_version: str | None = None
        self._plugin = DEBIAN_DICOMWEB_PLUGIN
        self._proc: subprocess.Popen | None = None

    @property
    def rest_url(self) -> str:
        if self.port is None:
            raise RuntimeError("Orthanc not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The DICOMweb root the services use (PACS_DICOMWEB_URL)."""
        return self.rest_url + DICOMWEB_ROOT.rstrip("/")

    @property
    def auth(self) -> tuple[str, str] | None:
        """(user, password) when authentication is on."""
        return next(iter(self.users.items())) if self.users else None

    def env(self) -> dict[str, str]:
        user, password = self.auth or (None, None)
        return pacs_env(self.url, user, password)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self, timeout_s: float = 30.0) -> str:
        """Spawn Orthanc, wait until it answers with the DICOMweb plugin loaded; returns `url`."""
        started = time.monotonic()
        self._spawn(require_orthanc())
        try:
            await self._wait_ready(timeout_s)
        except BaseException:
            await self.stop()
            raise
        self.started_in_s = time.monotonic() - started
        log.info(
            "Orthanc %s (DICOMweb %s) on %s (pid %s) in %.3f s",
            self.version,
            self.plugin_version,
            self.rest_url,
            self.pid,
            self.started_in_s,
        )
        return self.url

    def config(self) -> dict:
        """The JSON configuration (options: /etc/orthanc/orthanc.json of the package)."""
        return {
            "Name": "yigongti-pacs",
            "StorageDirectory": str(self.storage_dir),
            "IndexDirectory": str(self.storage_dir),
            "Plugins": [self._plugin],
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,  # loopback clients only
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "DicomServerEnabled": False,  # no DIMSE: uploads go over HTTP (STOW-RS / REST)
            "WebDavEnabled": False,
            "OrthancExplorerEnabled": False,
            "HttpThreadsCount": 8,  # 2-core machine; the default 50 is for a real archive
            "ConcurrentJobs": 1,
            "SaveJobs": False,
            "SyncStorageArea": False,  # throw-away storage: no fsync per instance
            "DeidentifyLogs": True,  # no patient data in orthanc.log
            "DicomWeb": {"Enable": True, "Root": DICOMWEB_ROOT, "EnableWado": False},
        }

    def _spawn(self, install: OrthancInstall) -> None:
        self._plugin = install.plugin
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.storage_dir.mkdir(exist_ok=True)
        self.port = self.port or free_port()
        # 0600: it holds the generated password when authentication is on.
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(self.config(), file, indent=2)
        with open(self.log_path, "ab") as log_file:
            self._proc = subprocess.Popen(
                [install.binary, str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C goes to the stack, which stops us in order
            )

    async def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last: BaseException | None = None
        async with httpx.AsyncClient(timeout=2.0, auth=self.auth) as client:
            while time.monotonic() < deadline:
                if self._proc is not None and self._proc.poll() is not None:
                    raise RuntimeError(
                        f"Orthanc exited with code {self._proc.returncode}; log {self.log_path}:\n"
                        f"{self.log_tail()}"
                    )
                try:
                    system = await client.get(self.rest_url + "/system")
                    if system.status_code == 200:
                        plugin = await client.get(self.rest_url + "/plugins/dicom-web")
                        if plugin.status_code != 200:
                            raise RuntimeError(
                                f"Orthanc is up but its DICOMweb plugin is not loaded; "
                                f"log {self.log_path}:\n{self.log_tail()}"
                            )
                        self.version = system.json().get("Version")
                        self.plugin_version = plugin.json().get("Version")
                        return
                    last = RuntimeError(f"GET /system answered {system.status_code}")
                except httpx.HTTPError as exc:  # not up yet
                    last = exc
                await asyncio.sleep(0.05)
        raise TimeoutError(
            f"Orthanc on {self.rest_url} did not answer within {timeout_s:.0f} s: {last!r}; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    async def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (Orthanc closes its index cleanly), then SIGKILL after `timeout_s`."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            await asyncio.to_thread(stop_process, proc, timeout_s)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def __aenter__(self) -> EmbeddedOrthanc:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

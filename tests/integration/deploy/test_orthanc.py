"""Our own Orthanc (the county PACS on one machine): started from its JSON config in
the run dir with the DICOMweb plugin of the Debian package, and wired into the stack."""

from __future__ import annotations

import json
import stat
import sys

import httpx
from yigongti_deploy import stack as stack_module
from yigongti_deploy.dicom_samples import make_study, upload_study
from yigongti_deploy.embedded import port_answers
from yigongti_deploy.orthanc import EmbeddedOrthanc

FAKE_SERVICE = """\
import os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ.get(self.path.strip("/").upper(), "").encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
HTTPServer((os.environ["HTTP_HOST"], int(os.environ["HTTP_PORT"])), Handler).serve_forever()
"""


# `orthanc` (the session's PACS) only for its rule: skipped without Orthanc, failed under CI.
async def test_our_orthanc_runs_from_the_run_dir_with_dicomweb_and_stops(tmp_path, orthanc):
    server = EmbeddedOrthanc(tmp_path)
    url = await server.start()
    try:
        print(
            f"\nOrthanc {server.version}, DICOMweb plugin {server.plugin_version}:"
            f" answered in {server.started_in_s:.3f} s"
        )
        assert url == f"http://127.0.0.1:{server.port}/dicom-web"
        assert server.plugin_version
        config = json.loads(server.config_path.read_text())
        assert stat.S_IMODE(server.config_path.stat().st_mode) == 0o600
        assert config["StorageDirectory"] == str(tmp_path / "orthanc-storage")
        assert config["RemoteAccessAllowed"] is False and config["DicomServerEnabled"] is False

        study = make_study("CT", "ACC-RUN-DIR")
        await upload_study(url, study)
        async with httpx.AsyncClient() as client:
            found = await client.get(f"{url}/studies", params={"AccessionNumber": "ACC-RUN-DIR"})
        assert [s["0020000D"]["Value"][0] for s in found.json()] == [study.study_uid]
        assert any(p.is_file() for p in server.storage_dir.rglob("*") if p.suffix != ".db")
        assert "dicom-web" in server.log_path.read_text()
    finally:
        await server.stop()
    assert not port_answers("127.0.0.1", server.port)


async def test_the_stack_starts_orthanc_and_gives_services_its_url(
    monkeypatch, tmp_path, admin_database_url, orthanc
):
    script = tmp_path / "fake-service"
    script.write_text(f"#!{sys.executable}\n{FAKE_SERVICE}")
    script.chmod(0o755)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("PACS_DICOMWEB_URL", raising=False)  # its own Orthanc
    monkeypatch.setenv("DATABASE_URL", admin_database_url)
    monkeypatch.setattr(stack_module, "SERVICES", (stack_module.ServiceEntry("lab", str(script)),))
    stack = stack_module.Stack(tmp_path / "run")
    await stack.start()
    try:
        print(f"\nstack timings: {stack.timings}")
        assert stack.pacs_url and stack.pacs_url in stack.describe()
        assert (tmp_path / "run" / "orthanc.log").exists()
        async with httpx.AsyncClient() as client:
            given = (await client.get(stack.services["lab"].url + "/pacs_dicomweb_url")).text
            studies = await client.get(f"{given}/studies")
        assert given == stack.pacs_url
        assert studies.status_code == 200 and studies.json() == []  # a fresh, empty PACS
    finally:
        await stack.stop()
    port = int(stack.pacs_url.split(":")[2].split("/")[0])
    assert not port_answers("127.0.0.1", port)

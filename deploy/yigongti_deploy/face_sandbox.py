"""A sandbox of the national face platform, for the demo and the tests only
(never deployed to prod: tests/unit/k8s). A small process of its own:

    python -m yigongti_deploy.face_sandbox --port 8099 --key-file sandbox.pem

- POST /enrol   {ec_index_no, template: [floats]}: keeps a person's face
  template (a feature vector, never an image), here and nowhere else;
- POST /compare {ec_index_no, probe: [floats], liveness, terminal_id}: cosine
  similarity of the probe with the template, the liveness score against its
  threshold, and the result signed as the platform signs it
  (contracts/yigongti_contracts/settlement/credentials.py): {payload, signature}.
- GET /issuer: its issuer id and public key (for FACE_ISSUER_KEYS_FILE).

The thresholds are data (THRESHOLDS). Certified terminals do the capture and
liveness on the device; here the caller hands the probe and its liveness
score. It can also sign an electronic voucher (POST /voucher {ec_index_no}).
"""

from __future__ import annotations

import argparse
import math
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from yigongti_contracts.settlement import credentials

ISSUER = "sandbox-face-1"
# Assumed, as data: a 1:1 match at cosine ≥ 0.80; a live face at ≥ 0.90. The
# national platform's own thresholds are not public.
THRESHOLDS = {"similarity": 0.80, "liveness": 0.90}


def cosine(a: list[float], b: list[float]) -> float:
    if len(a) != len(b) or not a:
        return 0.0
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


class FaceSandbox:
    def __init__(self, key: Ed25519PrivateKey | None = None, issuer: str = ISSUER,
                 thresholds: dict[str, float] | None = None) -> None:
        self.key = key or Ed25519PrivateKey.generate()
        self.issuer = issuer
        self.thresholds = dict(thresholds or THRESHOLDS)
        self._templates: dict[str, list[float]] = {}

    def public_pem(self) -> str:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def issuer_file(self) -> str:
        """The YAML of FACE_ISSUER_KEYS_FILE naming this sandbox."""
        pem = "\n".join("      " + line for line in self.public_pem().strip().splitlines())
        return f"issuers:\n  - id: {self.issuer}\n    public_key: |\n{pem}\n"

    def enrol(self, ec_index_no: str, template: list[float]) -> None:
        self._templates[ec_index_no] = [float(x) for x in template]

    def compare(self, ec_index_no: str, probe: list[float], liveness: float, terminal_id: str,
                *, issued_at: datetime | None = None) -> dict[str, Any]:
        template = self._templates.get(ec_index_no)
        similarity = cosine(template, probe) if template else 0.0
        payload = {
            "kind": "face_auth", "issuer": self.issuer, "auth_no": secrets.token_hex(16),
            "ec_index_no": ec_index_no, "terminal_id": terminal_id,
            "issued_at": (issued_at or datetime.now(UTC)).isoformat(),
            "matched": similarity >= self.thresholds["similarity"],
            "similarity": f"{similarity:.4f}", "liveness": f"{liveness:.4f}",
            "liveness_passed": liveness >= self.thresholds["liveness"],
        }
        return credentials.sign(payload, self.key)

    def voucher(self, ec_index_no: str, *, issued_at: datetime | None = None) -> dict[str, Any]:
        payload = {"kind": "qr_voucher", "issuer": self.issuer,
                   "voucher_no": secrets.token_hex(16), "ec_index_no": ec_index_no,
                   "issued_at": (issued_at or datetime.now(UTC)).isoformat()}
        return credentials.sign(payload, self.key)


from pydantic import BaseModel, ConfigDict, Field  # noqa: E402

_INDEX = r"^[A-Za-z0-9._:-]{1,64}$"


class EnrolBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ec_index_no: str = Field(pattern=_INDEX)
    template: list[float] = Field(min_length=1, max_length=1024)


class CompareBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ec_index_no: str = Field(pattern=_INDEX)
    probe: list[float] = Field(min_length=1, max_length=1024)
    liveness: float = Field(ge=0, le=1)
    terminal_id: str = Field(pattern=_INDEX)


class VoucherBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ec_index_no: str = Field(pattern=_INDEX)


def app(sandbox: FaceSandbox):
    from fastapi import FastAPI

    api = FastAPI(title="national face platform sandbox (dev only)")

    @api.post("/enrol")
    def enrol(body: EnrolBody) -> dict:
        sandbox.enrol(body.ec_index_no, body.template)
        return {"enrolled": body.ec_index_no}

    @api.post("/compare")
    def compare(body: CompareBody) -> dict:
        return sandbox.compare(body.ec_index_no, body.probe, body.liveness, body.terminal_id)

    @api.post("/voucher")
    def voucher(body: VoucherBody) -> dict:
        return sandbox.voucher(body.ec_index_no)

    @api.get("/issuer")
    def issuer() -> dict:
        return {"id": sandbox.issuer, "public_key": sandbox.public_pem(),
                "thresholds": sandbox.thresholds}

    @api.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    return api


def load_key(path: Path) -> Ed25519PrivateKey:
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--key-file", type=Path, required=True,
                        help="the sandbox issuer's Ed25519 key (PEM; made if absent)")
    parser.add_argument("--issuer-file", type=Path,
                        help="write FACE_ISSUER_KEYS_FILE for the settlement service here")
    args = parser.parse_args(argv)
    sandbox = FaceSandbox(load_key(args.key_file))
    if args.issuer_file:
        args.issuer_file.write_text(sandbox.issuer_file())
    uvicorn.run(app(sandbox), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Development keys for one run of the stack (or the tests): never used in production.

Writes into a directory:
- `auth_private.pem` / `auth_public.pem`: the Ed25519 pair that signs and
  verifies HTTP bearer tokens (services get the public PEM as AUTH_PUBLIC_KEY);
- `terminal_<id>.key`: the demo terminal's Ed25519 private key (PEM);
- `terminals.yaml`: the registry (TERMINALS_FILE) with the demo terminal's
  public key as base64 of its raw 32 bytes (and the LIS bridge's and the
  referral examples' terminals).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from yigongti_kit.auth import generate_keypair
from yigongti_kit.intake_auth import TerminalSigner

DEMO_TERMINAL_ID = "demo-terminal-1"
# A township branch of the Changji medical community; the demo's orders come from it.
DEMO_INSTITUTION_ID = "652325-B01"  # 奇台县总医院乔仁乡分院 (refdata)
# The LIS bridge of the lab centre that serves it (奇台县总医院医学检验共享中心): it
# signs the analysers' results it turns from HL7 into intake.
LIS_TERMINAL_ID = "lis-652325-L01"
LIS_INSTITUTION_ID = "652325-L01"
# The referral examples' terminals (contracts referral/examples.py): a township
# that refers up and the county coordinators' terminal that answers.
REFERRAL_TERMINALS = {"referral-652301-B02": "652301-B02",
                      "referral-652301-H01": "652301-H01"}


@dataclass(frozen=True)
class DevKeys:
    directory: Path
    auth_private_pem: str
    auth_public_pem: str
    terminal_id: str
    institution_id: str
    terminal_private_pem: str
    terminals_file: Path
    lis_terminal_id: str
    lis_institution_id: str
    lis_key_file: Path

    def referral_signer(self, terminal_id: str) -> TerminalSigner:
        """One of the referral examples' terminals (REFERRAL_TERMINALS)."""
        if terminal_id not in REFERRAL_TERMINALS:
            raise KeyError(terminal_id)
        return TerminalSigner(terminal_id,
                              (self.directory / f"terminal_{terminal_id}.key").read_text())

    def signer(self) -> TerminalSigner:
        """The demo terminal's signing side."""
        return TerminalSigner(self.terminal_id, self.terminal_private_pem)

    def lis_signer(self) -> TerminalSigner:
        """The lab centre's LIS bridge (results from analysers)."""
        return TerminalSigner(self.lis_terminal_id, self.lis_key_file.read_text())


def write_dev_keys(
    directory: Path | str,
    *,
    terminal_id: str = DEMO_TERMINAL_ID,
    institution_id: str = DEMO_INSTITUTION_ID,
    lis_institution_id: str = LIS_INSTITUTION_ID,
) -> DevKeys:
    """`institution_id`: the demo terminal's township; `lis_institution_id`: the
    lab centre whose LIS bridge signs the analysers' results (the one that
    serves that township in the reference data)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    auth_private, auth_public = generate_keypair()
    _write(directory / "auth_private.pem", auth_private, secret=True)
    _write(directory / "auth_public.pem", auth_public)

    terminal_pem, entry = _terminal(directory, terminal_id, institution_id)
    lis_terminal_id = f"lis-{lis_institution_id}"
    _, lis_entry = _terminal(directory, lis_terminal_id, lis_institution_id)
    referral_entries = [_terminal(directory, t, inst)[1] for t, inst in REFERRAL_TERMINALS.items()]
    terminals_file = directory / "terminals.yaml"
    _write(terminals_file, yaml.safe_dump({"terminals": [entry, lis_entry, *referral_entries]},
                                          sort_keys=False))
    return DevKeys(
        directory,
        auth_private,
        auth_public,
        terminal_id,
        institution_id,
        terminal_pem,
        terminals_file,
        lis_terminal_id,
        lis_institution_id,
        directory / f"terminal_{lis_terminal_id}.key",
    )


def _terminal(directory: Path, terminal_id: str, institution_id: str) -> tuple[str, dict]:
    """A new terminal key (PEM written beside the others) and its registry entry."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    _write(directory / f"terminal_{terminal_id}.key", pem, secret=True)
    return pem, TerminalSigner(terminal_id, key).registry_entry(institution_id)


def _write(path: Path, text: str, *, secret: bool = False) -> None:
    path.write_text(text)
    if secret:
        path.chmod(0o600)

"""Who may sign in to the workstation: a user file (YAML) with the same user ids,
institutions and roles the bearer tokens carry, and a scrypt hash per password.

    users:
      - user: STAFF-2001
        institution: 652325-E01
        roles: [diagnostician, reads_ecg]
        password: "scrypt$16384$8$1$<salt b64>$<hash b64>"

The file is named by WORKSTATION_USERS_FILE; without it nobody can sign in.
The development file (deploy/dev/workstation_users.yaml) never ships in the
prod overlay: production sign-in is the hospital's identity provider.

    python -m yigongti_diagnosis.workstation.users hash   # reads a password on stdin
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from yigongti_kit.auth import Principal

USERS_ENV = "WORKSTATION_USERS_FILE"
# scrypt cost (RFC 7914): N=2^14, r=8, p=1, the parameters RFC 7914 §2 and
# OWASP's password storage sheet give for interactive logins (16 MiB, ~50 ms).
N, R, P = 16384, 8, 1
DKLEN = 32


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=DKLEN)
    return "$".join(["scrypt", str(N), str(R), str(P), base64.b64encode(salt).decode(),
                     base64.b64encode(digest).decode()])


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p), dklen=len(expected), maxmem=64 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


@dataclass(frozen=True)
class User:
    user: str
    institution: str
    roles: tuple[str, ...]
    password: str

    def principal(self) -> Principal:
        return Principal(user=self.user, institution=self.institution, roles=self.roles)


def load(path: str | Path | None) -> dict[str, User]:
    if not path:
        return {}
    data = yaml.safe_load(Path(path).read_text("utf-8")) or {}
    users = {}
    for row in data.get("users", []):
        users[row["user"]] = User(row["user"], row["institution"], tuple(row["roles"]),
                                  row["password"])
    return users


# A hash to check against when the user is unknown, so an unknown user costs
# as much time as a wrong password (no user enumeration by timing).
_DUMMY = hash_password(secrets.token_hex(8))


def authenticate(users: dict[str, User], user: str, password: str) -> User | None:
    found = users.get(user)
    ok = verify_password(password, found.password if found else _DUMMY)
    return found if found and ok else None


def main() -> int:
    if sys.argv[1:] != ["hash"]:
        print(__doc__)
        return 2
    print(hash_password(sys.stdin.readline().rstrip("\n")))
    return 0


if __name__ == "__main__":
    os._exit(main())

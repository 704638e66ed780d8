"""Bearer tokens for HTTP: who calls (user), for which institution, with which roles.

A token is a JWT signed with Ed25519 (alg "EdDSA") carrying the claims
`sub` (user id), `inst` (institution id), `roles` (list of role names), `iat`,
`exp`, `iss` ("yigongti") and `aud` (the service it is meant for, e.g. "lab").
Services only hold the public key (setting AUTH_PUBLIC_KEY); the private key
stays with whoever issues tokens (the identity provider; for the demo, tests
and development the CLI below).

In a FastAPI app:

    @app.get("/orders/{institution_id}")
    async def orders(institution_id: str,
                     principal: Principal = Depends(require_roles("clinician"))):
        ensure_institution(principal, institution_id)

The dependencies read the verifying key from `request.app.state.auth_public_key`
and the expected audience from `request.app.state.auth_audience` (both set by
`yigongti_kit.http.create_http_app` from the settings).

CLI (ops and development):

    python -m yigongti_kit.auth keygen [--out DIR]
    python -m yigongti_kit.auth token --user u1 --inst I --roles a,b --aud lab \
        [--key private.pem | env AUTH_PRIVATE_KEY] [--ttl 3600]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

ISSUER = "yigongti"
ALGORITHM = "EdDSA"
LEEWAY_S = 30  # clock difference tolerated between issuer and service
# The reasons a 401 gives (TokenError.reason).
TOKEN_ERRORS = ("missing_token", "expired", "bad_signature", "wrong_audience", "wrong_issuer",
                "missing_claim", "bad_claim", "malformed")


@dataclass(frozen=True)
class Principal:
    """The caller of an HTTP request, from a verified token."""

    user: str
    institution: str
    roles: tuple[str, ...]

    def has_role(self, role: str) -> bool:
        return role in self.roles


class TokenError(ValueError):
    """A token that cannot be trusted. `reason` is a short code, safe to show."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- keys ----------------------------------------------------------------------


def generate_keypair() -> tuple[str, str]:
    """A new Ed25519 key pair as (private PEM, public PEM)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


@lru_cache(maxsize=16)
def _private_key(pem: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the token signing key must be an Ed25519 private key")
    return key


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """A key's id (`kid`): the first 16 hex digits of the SHA-256 of its raw bytes."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@lru_cache(maxsize=16)
def _public_keys(pems: str) -> dict[str, Ed25519PublicKey]:
    """The verifying keys of AUTH_PUBLIC_KEY, by key id: one PEM, or several one
    after the other while the signing key rotates (the new one added, tokens
    signed with it, the old one removed once its last token has expired)."""
    keys: dict[str, Ed25519PublicKey] = {}
    for block in re.findall(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----",
                            pems, re.S) or [pems]:
        key = serialization.load_pem_public_key(block.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("a token verifying key must be an Ed25519 public key")
        keys[key_id(key)] = key
    return keys


# --- tokens --------------------------------------------------------------------


def issue_token(
    private_key_pem: str,
    *,
    user: str,
    institution: str,
    roles: Iterable[str],
    audience: str,
    ttl_s: int = 3600,
    now: float | None = None,
    issuer: str = ISSUER,
) -> str:
    """A signed bearer token for `user` of `institution`, valid `ttl_s` seconds."""
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": user,
        "inst": institution,
        "roles": list(roles),
        "iat": issued,
        "exp": issued + int(ttl_s),
        "iss": issuer,
        "aud": audience,
    }
    key = _private_key(private_key_pem)
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": key_id(key)})


def verify_token(token: str, public_key_pem: str, audience: str,
                 issuer: str = ISSUER) -> Principal:
    """The principal of a valid token; raises TokenError with a reason code otherwise.

    `public_key_pem` holds one verifying key or several (rotation); the
    token's `kid` picks one, else each is tried. Reasons: "expired",
    "bad_signature", "wrong_audience", "wrong_issuer", "missing_claim",
    "bad_claim", "malformed".
    """
    try:
        keys = _public_keys(public_key_pem)
        kid = jwt.get_unverified_header(token).get("kid")
        candidates = [keys[kid]] if kid in keys else list(keys.values())
        claims = None
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[ALGORITHM],  # never trust the token's own alg header
                    audience=audience,
                    issuer=issuer,
                    leeway=LEEWAY_S,
                    options={"require": ["sub", "inst", "roles", "iat", "exp", "iss", "aud"]},
                )
                break
            except jwt.InvalidSignatureError:
                if key is candidates[-1]:
                    raise
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("expired") from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenError("bad_signature") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenError("wrong_audience") from exc
    except jwt.InvalidIssuerError as exc:
        raise TokenError("wrong_issuer") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError("missing_claim") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise TokenError("bad_signature") from exc
    except jwt.PyJWTError as exc:
        raise TokenError("malformed") from exc
    return _principal_of(claims)


def _principal_of(claims: Mapping) -> Principal:
    user, inst, roles = claims["sub"], claims["inst"], claims["roles"]
    if (
        not isinstance(user, str)
        or not user
        or not isinstance(inst, str)
        or not inst
        or not isinstance(roles, list)
        or not all(isinstance(r, str) for r in roles)
    ):
        raise TokenError("bad_claim")
    return Principal(user=user, institution=inst, roles=tuple(roles))


# Tokens already verified, until they expire: a client sends the same token
# with every request for its lifetime, and an Ed25519 check per request was a
# visible share of a service's CPU. Keyed by the exact token, key and audience.
_verified: dict[tuple[str, str, str, str], tuple[Principal, float]] = {}
_VERIFIED_MAX = 4096


def verify_token_cached(token: str, public_key_pem: str, audience: str,
                        issuer: str = ISSUER) -> Principal:
    """`verify_token`, remembering valid tokens until their `exp` (plus leeway)."""
    slot = (token, public_key_pem, audience, issuer)
    hit = _verified.get(slot)
    if hit is not None:
        if time.time() < hit[1]:
            return hit[0]
        del _verified[slot]
        raise TokenError("expired")
    principal = verify_token(token, public_key_pem, audience, issuer)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]  # verified above
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()
    _verified[slot] = (principal, float(exp) + LEEWAY_S)
    return principal


# --- FastAPI dependencies --------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="Ed25519-signed JWT (alg EdDSA)")


def unauthorized_headers(reason: str) -> dict[str, str]:
    """The WWW-Authenticate header of a 401 for `reason` (RFC 6750)."""
    if reason == "missing_token":
        return {"WWW-Authenticate": "Bearer"}  # no error code when no credentials were sent
    return {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{reason}"'}


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(status_code=status.HTTP_401_UNAUTHORIZED, detail=reason,
                         headers=unauthorized_headers(reason))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, else None."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def authenticate(authorization: str | None, public_key_pem: str, audience: str,
                 issuer: str = ISSUER) -> Principal:
    """The principal of an Authorization header value; TokenError("missing_token")
    without a bearer token, TokenError(reason) for one that cannot be trusted."""
    token = bearer_token(authorization)
    if token is None:
        raise TokenError("missing_token")
    return verify_token_cached(token, public_key_pem, audience, issuer)


async def require_principal(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> Principal:
    """The verified caller; 401 (WWW-Authenticate: Bearer) when missing, invalid or expired.

    (The kit's HTTP edge has already refused such a request before its body
    was read; this check stands for apps built without it.)"""
    public_key = getattr(request.app.state, "auth_public_key", None)
    audience = getattr(request.app.state, "auth_audience", None)
    if not public_key or not audience:
        # Misconfigured service: fail closed, and say so to the operator, not the caller.
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, "authentication not configured")
    if credentials is None or not credentials.credentials:
        raise _unauthorized("missing_token")
    try:
        return verify_token_cached(credentials.credentials, public_key, audience,
                                   getattr(request.app.state, "auth_issuer", ISSUER))
    except TokenError as exc:
        raise _unauthorized(exc.reason) from None


def require_roles(*roles: str) -> Callable[..., object]:
    """A dependency giving the principal if it holds every one of `roles`, else 403."""

    async def dependency(principal: Principal = Depends(require_principal)) -> Principal:
        for role in roles:
            if role not in principal.roles:
                raise HTTPException(status.HTTP_403_FORBIDDEN, f"missing role: {role}")
        return principal

    return dependency


# `refdata` for scoping: either a mapping institution id -> ids of the institutions
# directly under it (a total hospital -> its township branches -> their village
# clinics), or a function giving those children.
Children = Mapping[str, Iterable[str]] | Callable[[str], Iterable[str]]


def scoped_institutions(principal: Principal, refdata: Children | None = None) -> frozenset[str]:
    """Institutions whose data `principal` may see: its own, and with `refdata`
    every institution below it in the medical community."""
    if refdata is None:
        return frozenset({principal.institution})
    children = refdata if callable(refdata) else (lambda i: refdata.get(i, ()))
    seen = {principal.institution}
    todo = [principal.institution]
    while todo:
        for child in children(todo.pop()) or ():
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return frozenset(seen)


def ensure_institution(
    principal: Principal, institution_id: str, refdata: Children | None = None
) -> None:
    """403 "institution out of scope" unless `principal` may act for `institution_id`."""
    if institution_id not in scoped_institutions(principal, refdata):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "institution out of scope")


# --- CLI -----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m yigongti_kit.auth", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    keygen = sub.add_parser("keygen", help="print (or write) a new Ed25519 key pair")
    keygen.add_argument("--out", type=Path, help="directory to write private.pem and public.pem")
    token = sub.add_parser("token", help="print a signed bearer token")
    token.add_argument("--user", required=True)
    token.add_argument("--inst", required=True, help="institution id")
    token.add_argument("--roles", default="", help="comma-separated role names")
    token.add_argument("--aud", required=True, help="audience: the service name, e.g. lab")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.add_argument(
        "--key", type=Path, help="private key PEM file (default: env AUTH_PRIVATE_KEY)"
    )
    args = parser.parse_args(argv)

    if args.command == "keygen":
        private_pem, public_pem = generate_keypair()
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            private_path = args.out / "private.pem"
            private_path.write_text(private_pem)
            private_path.chmod(0o600)
            (args.out / "public.pem").write_text(public_pem)
            print(f"wrote {private_path} and {args.out / 'public.pem'}")
        else:
            sys.stdout.write(private_pem + public_pem)
        return 0

    if args.key:
        private_pem = args.key.read_text()
    else:
        private_pem = os.environ.get("AUTH_PRIVATE_KEY", "").replace("\\n", "\n")
    if not private_pem.strip():
        parser.error("give --key or set AUTH_PRIVATE_KEY")
    roles = [r for r in (p.strip() for p in args.roles.split(",")) if r]
    print(
        issue_token(
            private_pem,
            user=args.user,
            institution=args.inst,
            roles=roles,
            audience=args.aud,
            ttl_s=args.ttl,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Identity at the counter (domain-rules §2): a signed credential in, a
single-use settlement token (2 minutes) out.

The face never reaches us: the certified terminal and the national face
platform do liveness and the 1:1 comparison; we get the platform's signed
result and check it (credentials.py): a registered issuer's signature, fresh
(≤ 60 s), never seen before (its authNo, kept as a hash), from a registered,
active terminal of the caller's institution, matched and live. The voucher
(QR) goes the same way; the card and the ID number are looked up by the ID.
Each refusal is an IdentityRejected with its reason. The check is bound to
the visit by the counter's outBizNo: a retried request (same outBizNo, same
request) gets the same answer, the same token included (the token is an HMAC
of the check's id and a stored nonce, so it is never stored itself).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
from yigongti_contracts.settlement import credentials
from yigongti_contracts.settlement.codes import (
    CredentialType,
    IdentityRejectionReason,
    settlement_id_of,
)
from yigongti_contracts.settlement.v1 import AuditFlagRaised, IdentityRejected, IdentityVerified
from yigongti_kit.outbox import outbox_cte

from . import locking, persons, supervision
from .config import Keys, b64
from .events import emit_all, events_arguments

TOKEN_TTL = timedelta(minutes=2)
R = IdentityRejectionReason


@dataclass(frozen=True)
class VerifyRequest:
    out_biz_no: str
    visit_id: str
    credential_type: CredentialType
    credential: dict[str, Any]  # signed (face, voucher) or {"id_number", "card_sn"?}


def digest(req: VerifyRequest) -> str:
    body = json.dumps([req.visit_id, req.credential_type.value, req.credential],
                      sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(body).hexdigest()


def token_of(keys: Keys, identity_id: str, nonce: str) -> str:
    mac = hmac.new(hashlib.sha256(b"settlement-token" + keys.id_key).digest(),
                   f"{identity_id}\x1f{nonce}".encode(), hashlib.sha256).digest()
    return "st_" + b64(mac)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Refused(Exception):
    def __init__(self, reason: IdentityRejectionReason, terminal_id: str | None = None) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.terminal_id = terminal_id


# The facts a signed credential is decided on, in one round trip: the terminal
# (registered? active? whose?) and the person the platform matched, with the
# person's ref under the current key version (NULL if enrolled under an older
# one only: persons.current_ref derives it).
_SIGNED_FACTS = """
    SELECT t.institution_id, t.active, p.person_id, p.died_on, r.patient_ref
      FROM (SELECT 1) AS one
      LEFT JOIN terminals t ON t.terminal_id = $1
      LEFT JOIN persons p ON p.ec_index_no = $2
      LEFT JOIN person_refs r ON r.person_id = p.person_id AND r.key_version = $3"""


@dataclass(frozen=True)
class _Person:
    person_id: int
    died_on: date | None
    patient_ref: str | None  # under the current key version, when stored


def _check_terminal(institution_id: str | None, active: bool | None, terminal_id: str,
                    institution: str) -> None:
    if institution_id is None:
        raise Refused(R.unknown_terminal, None)
    if not active:
        raise Refused(R.revoked_terminal, terminal_id)
    if institution_id != institution:
        raise Refused(R.wrong_institution, terminal_id)


async def _terminal(conn: asyncpg.Connection, terminal_id: str, institution: str) -> None:
    row = await conn.fetchrow("SELECT institution_id, active FROM terminals WHERE terminal_id = $1",
                              terminal_id)
    _check_terminal(row and row["institution_id"], row and row["active"], terminal_id,
                    institution)


async def _signed(conn: asyncpg.Connection, keys: Keys, req: VerifyRequest, institution: str,
                  caller_terminal: str, identity_id: str, now: datetime
                  ) -> tuple[_Person | None, str]:
    """(the matched person or None, terminal id) of a face result or a voucher."""
    cred = req.credential
    payload = cred.get("payload") if isinstance(cred, dict) else None
    if not isinstance(payload, dict):
        raise Refused(R.bad_signature)
    kind = "face_auth" if req.credential_type is CredentialType.face else "qr_voucher"
    terminal_id = str(payload.get("terminal_id") or caller_terminal)
    issuer = keys.issuers.get(str(payload.get("issuer")))
    if issuer is None:
        raise Refused(R.unknown_issuer)
    if payload.get("kind") != kind or not credentials.verify(cred, issuer):
        raise Refused(R.bad_signature)
    facts = await conn.fetchrow(_SIGNED_FACTS, terminal_id, str(payload.get("ec_index_no")),
                                keys.current_version)
    _check_terminal(facts["institution_id"], facts["active"], terminal_id, institution)
    if not credentials.fresh(payload, now):
        raise Refused(R.stale, terminal_id)
    number = str(payload.get("auth_no") or payload.get("voucher_no") or "")
    used = hashlib.sha256(f"{kind}:{payload.get('issuer')}:{number}".encode()).hexdigest()
    if await conn.fetchval("""INSERT INTO used_credentials (credential_hash, identity_id)
                              VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true""",
                           used, identity_id) is None:
        raise Refused(R.replayed, terminal_id)
    if kind == "face_auth":
        if payload.get("matched") is not True:
            raise Refused(R.face_mismatch, terminal_id)
        if payload.get("liveness_passed") is not True:
            raise Refused(R.low_liveness, terminal_id)
    if facts["person_id"] is None:
        return None, terminal_id
    return _Person(facts["person_id"], facts["died_on"], facts["patient_ref"]), terminal_id


async def _by_id_number(conn: asyncpg.Connection, keys: Keys, req: VerifyRequest,
                        institution: str, caller_terminal: str) -> tuple[_Person | None, str]:
    await _terminal(conn, caller_terminal, institution)
    try:
        person_id = await persons.person_by_id_number(conn, keys,
                                                      str(req.credential.get("id_number")))
    except ValueError:
        return None, caller_terminal
    if person_id is None:
        return None, caller_terminal
    row = await conn.fetchrow("SELECT card_sn_hash, died_on FROM persons WHERE person_id = $1",
                              person_id)
    if req.credential_type is CredentialType.card:
        given = req.credential.get("card_sn")
        if not given or row["card_sn_hash"] != persons.card_hash(str(given)):
            return None, caller_terminal
    return _Person(person_id, row["died_on"], None), caller_terminal


async def verify(conn: asyncpg.Connection, keys: Keys, req: VerifyRequest, *,
                 institution: str, caller_terminal: str) -> dict[str, Any]:
    """Check the credential; the answer (also to a retry of the same outBizNo)."""
    identity_id = settlement_id_of(institution, req.out_biz_no)
    await locking.lock_settlement(conn, identity_id)
    d = digest(req)
    row = await conn.fetchrow("SELECT * FROM identities WHERE identity_id = $1", identity_id)
    if row is not None:
        if row["request_digest"] != d:
            return {"status": "refused", "reason": "out_biz_no_reused", "identity_id": identity_id}
        return _answer(keys, row)
    now = datetime.now(UTC)
    terminal_id: str | None = caller_terminal
    try:
        if req.credential_type in (CredentialType.face, CredentialType.qr_voucher):
            person, terminal_id = await _signed(conn, keys, req, institution, caller_terminal,
                                                identity_id, now)
        elif req.credential_type in (CredentialType.card, CredentialType.id_number):
            person, terminal_id = await _by_id_number(conn, keys, req, institution,
                                                      caller_terminal)
        else:
            raise Refused(R.bad_signature)
        if person is None:
            raise Refused(R.not_enrolled, terminal_id)
    except Refused as refused:
        return await _reject(conn, identity_id, req, d, institution, refused)
    person_id = person.person_id
    ref = person.patient_ref or await persons.current_ref(conn, keys, person_id)
    hit = supervision.deceased_credential(person.died_on, now.date())
    if hit is not None:
        flag = await supervision_flag(conn, identity_id, ref, institution, hit, to_review=True)
        answer = await _reject(conn, identity_id, req, d, institution,
                               Refused(R.deceased, terminal_id), person_id=person_id)
        await emit_all(conn, [flag])
        return answer
    nonce = b64(os.urandom(16))
    expires = now + TOKEN_TTL
    verified = IdentityVerified(
        settlement_id=identity_id, visit_id=req.visit_id, patient_ref=ref,
        institution=institution, terminal_id=terminal_id, credential_type=req.credential_type,
        token_expires_at=expires, verified_at=now)
    row = await conn.fetchrow(  # the check, its token and its event in one round trip
        f"""WITH checked AS (
               INSERT INTO identities (identity_id, institution, visit_id, terminal_id,
                   credential_type, request_digest, person_id, patient_ref, status, token_nonce,
                   token_expires_at, verified_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'verified', $9, $10, $11) RETURNING *),
           token AS (
               INSERT INTO tokens (token_hash, identity_id, expires_at)
               SELECT $12, identity_id, token_expires_at FROM checked),
           {outbox_cte(13)}
           SELECT * FROM checked""",
        identity_id, institution, req.visit_id, terminal_id, req.credential_type.value, d,
        person_id, ref, nonce, expires, now, token_hash(token_of(keys, identity_id, nonce)),
        *events_arguments([verified]))
    return _answer(keys, row)


async def _reject(conn: asyncpg.Connection, identity_id: str, req: VerifyRequest, d: str,
                  institution: str, refused: Refused, person_id: int | None = None
                  ) -> dict[str, Any]:
    row = await conn.fetchrow(
        """INSERT INTO identities (identity_id, institution, visit_id, terminal_id,
               credential_type, request_digest, person_id, status, reason)
           VALUES ($1, $2, $3, $4, $5, $6, $7, 'rejected', $8) RETURNING *""",
        identity_id, institution, req.visit_id, refused.terminal_id, req.credential_type.value,
        d, person_id, refused.reason.value)
    await emit_all(conn, [IdentityRejected(
        settlement_id=identity_id, institution=institution, terminal_id=refused.terminal_id,
        credential_type=req.credential_type, reason=refused.reason,
        rejected_at=row["verified_at"])])
    return _answer(None, row)


def _answer(keys: Keys | None, row: asyncpg.Record) -> dict[str, Any]:
    if row["status"] == "rejected":
        # not_enrolled is answered as a mismatch: the answer never tells who is insured
        reason = "face_mismatch" if row["reason"] == "not_enrolled" else row["reason"]
        return {"status": "refused", "reason": reason, "identity_id": row["identity_id"]}
    assert keys is not None or row["token_nonce"] is None
    return {"status": "verified", "identity_id": row["identity_id"],
            "patient_ref": row["patient_ref"],
            "settlement_token": token_of(keys, row["identity_id"], row["token_nonce"]),
            "token_expires_at": row["token_expires_at"].isoformat()}


async def redeem(conn: asyncpg.Connection, token: str) -> asyncpg.Record | None:
    """The identity check a token was issued for, once (its row): used or
    expired, None."""
    return await conn.fetchrow(
        """WITH redeemed AS (
               UPDATE tokens SET used_at = db_now()
                WHERE token_hash = $1 AND used_at IS NULL AND expires_at > db_now()
               RETURNING identity_id)
           SELECT identities.* FROM identities JOIN redeemed USING (identity_id)""",
        token_hash(token))


async def supervision_flag(conn: asyncpg.Connection, settlement_id: str, patient_ref: str,
                           institution: str, hit: supervision.Hit, *, to_review: bool
                           ) -> AuditFlagRaised:
    """Store a rule's hit as a flag; the AuditFlagRaised to emit."""
    from yigongti_contracts.settlement.v1 import Evidence

    flag_id = "FLAG-" + hashlib.sha256(
        f"{settlement_id}\x1f{hit.rule_id}\x1f{hit.facts()}".encode()).hexdigest()[:24]
    evidence = tuple(Evidence(code=e.code, value=e.value[:64]) for e in hit.evidence[:20])
    raised_at = await conn.fetchval(
        """INSERT INTO audit_flags (flag_id, settlement_id, patient_ref, institution, rule_id,
               grade, stage, evidence, to_review)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (flag_id) DO UPDATE SET flag_id = excluded.flag_id
           RETURNING raised_at""",
        flag_id, settlement_id, patient_ref, institution, hit.rule_id, hit.grade.value,
        hit.stage.value, ([[e.code, e.value] for e in evidence]), to_review)
    return AuditFlagRaised(
        flag_id=flag_id, settlement_id=settlement_id, patient_ref=patient_ref,
        institution=institution, rule_id=hit.rule_id, grade=hit.grade.value,
        stage=hit.stage.value, evidence=evidence, to_review=to_review, raised_at=raised_at)

"""Insured persons: enrolment with the national ID encrypted at rest, and the
look-up by ID number that gives a terminal the patient_ref.

Key rotation: refs are `<version>:<hmac>`. A person keeps a row in
person_refs for every key version they were looked up under, so an old ref
still resolves to them. Other services know a patient only by ref: after a
rotation the same person appears under a new ref; matching across versions
needs an event (PatientRefRotated, old ref → new ref) that this version does
not publish yet (README, limits).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import date

import asyncpg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from yigongti_contracts.common import Sex
from yigongti_contracts.patient_ref import normalise_national_id, patient_ref

from .config import Keys

log = logging.getLogger(__name__)


def encrypt_id(keys: Keys, national_id: str) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(keys.id_key).encrypt(nonce, national_id.encode("ascii"), b"nid")


def decrypt_id(keys: Keys, blob: bytes) -> str:
    return AESGCM(keys.id_key).decrypt(blob[:12], blob[12:], b"nid").decode("ascii")


def sex_of(normalised_id: str) -> Sex:
    """GB 11643-1999: the 17th character is odd for men, even for women."""
    return Sex.male if int(normalised_id[16]) % 2 else Sex.female


def card_hash(card_sn: str) -> str:
    return hashlib.sha256(("card:" + card_sn.strip().upper()).encode()).hexdigest()


@dataclass(frozen=True)
class Enrolment:
    national_id: str
    scheme: str
    assistance: str
    region: str
    ec_index_no: str | None = None
    card_sn: str | None = None
    formerly_poor: bool = False
    died_on: date | None = None


async def enrol(conn: asyncpg.Connection, keys: Keys, e: Enrolment) -> str:
    """Enrol a person (or update an enrolled one); their current patient_ref."""
    normalised = normalise_national_id(e.national_id)
    ref = patient_ref(normalised, keys.ref_keys[keys.current_version], keys.current_version)
    person_id = await person_by_id_number(conn, keys, normalised)
    values = (e.ec_index_no, card_hash(e.card_sn) if e.card_sn else None, sex_of(normalised).value,
              e.scheme, e.assistance, e.formerly_poor, e.died_on, e.region)
    if person_id is None:
        person_id = await conn.fetchval(
            """INSERT INTO persons (national_id_ct, ec_index_no, card_sn_hash, sex, scheme,
                   assistance, formerly_poor, died_on, region)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING person_id""",
            encrypt_id(keys, normalised), *values)
        await conn.execute(
            "INSERT INTO person_refs (patient_ref, person_id, key_version) VALUES ($1, $2, $3)",
            ref, person_id, keys.current_version)
    else:
        await conn.execute(
            """UPDATE persons SET ec_index_no = $2, card_sn_hash = $3, sex = $4, scheme = $5,
                   assistance = $6, formerly_poor = $7, died_on = $8, region = $9
               WHERE person_id = $1""", person_id, *values)
    return ref


async def person_by_id_number(conn: asyncpg.Connection, keys: Keys, national_id: str
                              ) -> int | None:
    """The enrolled person with this ID, found by its ref under any key version
    (newest first); gives them a ref under the current version if they lack one."""
    normalised = normalise_national_id(national_id)
    versions = sorted(keys.ref_keys, key=lambda v: int(v[1:]), reverse=True)
    for version in versions:
        ref = patient_ref(normalised, keys.ref_keys[version], version)
        person_id = await conn.fetchval(
            "SELECT person_id FROM person_refs WHERE patient_ref = $1", ref)
        if person_id is not None:
            if version != keys.current_version:
                await conn.execute(
                    """INSERT INTO person_refs (patient_ref, person_id, key_version)
                       VALUES ($1, $2, $3) ON CONFLICT DO NOTHING""",
                    patient_ref(normalised, keys.ref_keys[keys.current_version],
                                keys.current_version), person_id, keys.current_version)
            return person_id
    return None


async def current_ref(conn: asyncpg.Connection, keys: Keys, person_id: int) -> str:
    ref = await conn.fetchval(
        "SELECT patient_ref FROM person_refs WHERE person_id = $1 AND key_version = $2",
        person_id, keys.current_version)
    if ref is None:  # enrolled under an older key only: derive it from the stored ID
        blob = await conn.fetchval("SELECT national_id_ct FROM persons WHERE person_id = $1",
                                   person_id)
        ref = patient_ref(decrypt_id(keys, blob), keys.ref_keys[keys.current_version],
                          keys.current_version)
        await conn.execute(
            """INSERT INTO person_refs (patient_ref, person_id, key_version)
               VALUES ($1, $2, $3) ON CONFLICT DO NOTHING""", ref, person_id, keys.current_version)
    return ref


async def person_by_ref(conn: asyncpg.Connection, ref: str) -> int | None:
    return await conn.fetchval("SELECT person_id FROM person_refs WHERE patient_ref = $1", ref)


class RateLimited(Exception):
    pass


async def lookup(conn: asyncpg.Connection, keys: Keys, *, national_id: str, terminal_id: str,
                 institution: str, visit_id: str, limit_per_minute: int) -> str | None:
    """The person's current ref, or None (an invalid or unenrolled ID alike).
    Logged with terminal and visit; at most `limit_per_minute` per terminal."""
    recent = await conn.fetchval(
        """SELECT count(*) FROM lookups
           WHERE terminal_id = $1 AND at > db_now() - interval '1 minute'""", terminal_id)
    if recent >= limit_per_minute:
        log.warning("ID look-ups of terminal %s over %d a minute: refused", terminal_id,
                    limit_per_minute)
        raise RateLimited()
    try:
        person_id = await person_by_id_number(conn, keys, national_id)
    except ValueError:
        person_id = None
    await conn.execute(
        "INSERT INTO lookups (terminal_id, institution, visit_id, found) VALUES ($1, $2, $3, $4)",
        terminal_id, institution, visit_id, person_id is not None)
    # Terminal and visit, never the ID (nor the ref: the log is not a patient index).
    log.info("ID look-up by terminal %s for visit %s: %s", terminal_id, visit_id,
             "found" if person_id is not None else "no match")
    if person_id is None:
        return None
    return await current_ref(conn, keys, person_id)

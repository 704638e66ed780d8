"""Helpers of the settlement tests: synthetic national IDs, enrolment, the
face path through the sandbox, a bill."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

from yigongti_contracts.patient_ref import check_character

_seq = itertools.count(1)


def national_id(*, male: bool = True, region: str = "652325", born: str = "19450301") -> str:
    """A valid synthetic 18-character ID (GB 11643-1999), unique in the run."""
    n = next(_seq) + random.randint(0, 400) * 1000
    sequence = (n * 2 + (1 if male else 0)) % 1000
    body = f"{region}{born}{sequence:03d}"
    return body + check_character(body)


def template(seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(-1, 1) for _ in range(64)]


def line(item_code: str = "310100001", price: str = "100.00", qty: int = 1, category: str = "a",
         served_at: datetime | None = None) -> dict:
    from decimal import Decimal
    return {"item_code": item_code, "category": category, "quantity": qty, "unit_price": price,
            "amount": f"{Decimal(price) * qty:.2f}",
            "served_at": (served_at or datetime.now(UTC) - timedelta(hours=1)).isoformat()}


async def enrol(st, *, male: bool = True, assistance: str = "none", scheme: str = "resident",
                died_on: str | None = None, formerly_poor: bool = False, card_sn=None):
    """Enrol a person at the office and at the face sandbox; (id, ec_index_no, ref, face)."""
    nid = national_id(male=male)
    ec = f"EC{next(_seq):08d}"
    face = template(hash(ec) & 0xFFFF)
    st.sandbox.enrol(ec, face)
    st.secrets_used.append(nid)
    async with st.office() as office:
        body = {"id_number": nid, "scheme": scheme, "assistance": assistance, "region": "652325",
                "ec_index_no": ec, "formerly_poor": formerly_poor}
        if died_on:
            body["died_on"] = died_on
        if card_sn:
            body["card_sn"] = card_sn
        r = await office.post("/office/persons", json=body)
        assert r.status_code == 200, r.text
    return nid, ec, r.json()["patient_ref"], face


def out_biz_no(prefix: str = "OB") -> str:
    return f"{prefix}{next(_seq):06d}{random.randint(0, 10**6):06d}"


async def verify_face(st, client, ec: str, face: list[float], *, visit: str, terminal: str,
                      liveness: float = 0.98, obn: str | None = None, result=None):
    result = result or st.sandbox.compare(ec, face, liveness, terminal)
    st.secrets_used.append(result["payload"]["auth_no"])
    obn = obn or out_biz_no()
    r = await client.post("/identity/verify", json={
        "out_biz_no": obn, "visit_id": visit, "credential_type": "face", "credential": result})
    if r.status_code == 200:
        st.secrets_used.append(r.json()["settlement_token"])
    return obn, r

HOSPITAL = "652325-H01"  # a second counter's institution (the tests register it)
COUNTER_H01 = "counter-h01"
REVOKED = "counter-revoked"

"""FHIR R4 of a settlement: one Coverage per payer, a Claim whose `insurance`
lists them in sequence 1–3, and a ClaimResponse whose adjudication amounts
(categories from the yigongti CodeSystem) add up to Claim.total."""

from __future__ import annotations

from typing import Any

CS = "https://yigongti.example/fhir/CodeSystem/settlement-adjudication"
PAYERS = (("basic", "基本医疗保险"), ("critical_illness", "大病保险 / 职工大额医疗费用补助"),
          ("assistance", "医疗救助"))


def _money(value: str) -> dict[str, Any]:
    return {"value": float(value), "currency": "CNY"}


def settlement_bundle(row) -> dict[str, Any]:
    b = (row["breakdown"])
    sid = row["settlement_id"].replace(":", "-")
    patient = {"identifier": {"system": "urn:yigongti:patient-ref", "value": row["patient_ref"]}}
    coverages = [{
        "resourceType": "Coverage", "id": f"{sid}-{code.replace('_', '-')}", "status": "active",
        "beneficiary": patient, "payor": [{"display": name}],
        "type": {"coding": [{"system": CS, "code": code}]},
    } for code, name in PAYERS]
    second = f"{float(b['critical_illness']) + float(b['large_amount_subsidy']):.2f}"
    amounts = {"basic": b["basic"], "critical_illness": second, "assistance": b["assistance"],
               "out_of_pocket": b["out_of_pocket"]}
    claim = {
        "resourceType": "Claim", "id": f"{sid}-claim",
        "status": "cancelled" if row["status"] == "reversed" else "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type",
                             "code": "institutional" if b["setting"] == "inpatient"
                             else "professional"}]},
        "use": "claim", "patient": patient, "created": row["settled_at"].isoformat(),
        "provider": {"identifier": {"system": "urn:yigongti:institution",
                                    "value": row["institution"]}},
        "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority",
                                 "code": "normal"}]},
        "insurance": [{"sequence": i + 1, "focal": i == 0,
                       "coverage": {"reference": f"Coverage/{c['id']}"}}
                      for i, c in enumerate(coverages)],
        "total": _money(b["total"]),
    }
    response = {
        "resourceType": "ClaimResponse", "id": f"{sid}-response", "status": claim["status"],
        "type": claim["type"], "use": "claim", "patient": patient,
        "created": row["settled_at"].isoformat(), "insurer": {"display": "三重保障 一站式结算"},
        "request": {"reference": f"Claim/{claim['id']}"}, "outcome": "complete",
        "adjudication": [{"category": {"coding": [{"system": CS, "code": code}]},
                          "amount": _money(value)} for code, value in amounts.items()],
        "total": [{"category": {"coding": [{"system": CS, "code": code}]},
                   "amount": _money(value)} for code, value in amounts.items()],
    }
    entries = [*coverages, claim, response]
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{e['id']}", "resource": e} for e in entries]}

"""FHIR R4 of a settlement (issue 13 item 10): one Coverage per payer, a Claim
whose `insurance` lists them in sequence 1–3 (basic first, focal), and a
ClaimResponse whose adjudication categories come from the yigongti CodeSystem
`settlement-adjudication` and sum to Claim.total (the three payers and the
patient's share). A reversed settlement is a cancelled Claim and ClaimResponse.

Pure: the settlement's stored breakdown (handlers.breakdown_json) in, resources out.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from yigongti_contracts import fhir as f

ADJUDICATION = f.code_system("settlement-adjudication")
PAYER = f.code_system("settlement-payer")
SETTLEMENT = f.sid("settlement")
# The payers in the order they pay (domain-rules §1.1), with their sequence.
PAYERS = (("basic", "基本医疗保险"),
          ("second_tier", "大病保险 / 职工大额医疗费用补助"),
          ("assistance", "医疗救助"))
CATEGORIES = ("basic", "second_tier", "assistance", "out_of_pocket")


def _amounts(b: dict[str, Any]) -> dict[str, Decimal]:
    return {"basic": Decimal(b["basic"]),
            "second_tier": Decimal(b["critical_illness"]) + Decimal(b["large_amount_subsidy"]),
            "assistance": Decimal(b["assistance"]),
            "out_of_pocket": Decimal(b["out_of_pocket"])}


def resources(*, settlement_id: str, status: str, patient_ref: str, institution: str,
              settled_at: datetime, breakdown: dict[str, Any]) -> list[dict[str, Any]]:
    active = "cancelled" if status == "reversed" else "active"
    patient = f.patient(patient_ref)
    coverages = [{
        "resourceType": "Coverage",
        "identifier": [f.identifier(SETTLEMENT, f"{settlement_id}/coverage/{code}")],
        "status": active,
        "type": f.concept(f.coding(PAYER, code, name)),
        "beneficiary": patient,
        "payor": [{"display": name}],
        "order": seq,
    } for seq, (code, name) in enumerate(PAYERS, start=1)]
    claim_type = f.concept(f.coding("http://terminology.hl7.org/CodeSystem/claim-type",
                                    "institutional" if breakdown["setting"] == "inpatient"
                                    else "professional"))
    claim_id = f.identifier(SETTLEMENT, settlement_id)
    claim = {
        "resourceType": "Claim", "identifier": [claim_id], "status": active,
        "type": claim_type, "use": "claim", "patient": patient,
        "created": f.instant(settled_at), "provider": f.organization(institution),
        "priority": f.concept(f.coding(
            "http://terminology.hl7.org/CodeSystem/processpriority", "normal")),
        "insurance": [{"sequence": seq, "focal": seq == 1,
                       "coverage": f.ref("Coverage", SETTLEMENT,
                                         f"{settlement_id}/coverage/{code}")}
                      for seq, (code, _) in enumerate(PAYERS, start=1)],
        "item": [{"sequence": 1,
                  "productOrService": f.concept(f.coding(f.code_system("settlement-bill"),
                                                         "itemised_bill")),
                  "net": f.money(Decimal(breakdown["total"]))}],
        "total": f.money(Decimal(breakdown["total"])),
    }
    amounts = _amounts(breakdown)
    response = {
        "resourceType": "ClaimResponse",
        "identifier": [f.identifier(SETTLEMENT, f"{settlement_id}/response")],
        "status": active, "type": claim_type, "use": "claim", "patient": patient,
        "created": f.instant(settled_at), "insurer": {"display": "三重保障 一站式结算"},
        "request": f.ref("Claim", SETTLEMENT, settlement_id), "outcome": "complete",
        # R4 has adjudication per item: the bill is one item (Claim.item 1).
        "item": [{"itemSequence": 1, "adjudication": [
            {"category": f.concept(f.coding(ADJUDICATION, code)),
             "amount": f.money(amounts[code])} for code in CATEGORIES]}],
        "total": [{"category": f.concept(f.coding(ADJUDICATION, code)),
                   "amount": f.money(amounts[code])} for code in CATEGORIES],
    }
    return [*coverages, claim, response]


def settlement_bundle(row) -> dict[str, Any]:
    return f.bundle(resources(
        settlement_id=row["settlement_id"], status=row["status"],
        patient_ref=row["patient_ref"], institution=row["institution"],
        settled_at=row["settled_at"], breakdown=row["breakdown"]))

"""A settlement as FHIR R4 (Coverage ×3, Claim, ClaimResponse) validates with
FHIR.js, the Claim lists the three payers in sequence 1–3, and the
ClaimResponse's adjudication sums to Claim.total."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from fhir_check import problems
from yigongti_contracts import fhir as f
from yigongti_settlement import fhir, payers
from yigongti_settlement.benefits import policy_for
from yigongti_settlement.handlers import breakdown_json


def _breakdown(setting: str = "inpatient") -> dict:
    req = payers.SettlementRequest(
        lines=(payers.ChargeLine("310100001", "a", Decimal(1), Decimal("114300.00"),
                                 Decimal("114300.00")),),
        person=payers.Person("resident", "low_income"), setting=setting, level=2)
    return breakdown_json(payers.settle(policy_for("652325", datetime(2025, 3, 1).date()), req))


def _resources(status: str = "completed", setting: str = "inpatient") -> list[dict]:
    return fhir.resources(settlement_id="652325-B01:DIS-1", status=status,
                          patient_ref="v1:" + "ab" * 32, institution="652325-B01",
                          settled_at=datetime(2025, 3, 20, 4, tzinfo=UTC),
                          breakdown=_breakdown(setting))


def test_the_resources_and_the_bundle_validate_as_fhir_r4():
    resources = _resources()
    outpatient = _resources("reversed", "outpatient")
    bundle = f.bundle(_resources())
    assert problems([*resources, *outpatient, bundle]) == [[]] * (len(resources) * 2 + 1)


def test_claim_lists_the_three_payers_in_order_and_the_response_adds_up():
    coverages = [r for r in _resources() if r["resourceType"] == "Coverage"]
    claim = next(r for r in _resources() if r["resourceType"] == "Claim")
    response = next(r for r in _resources() if r["resourceType"] == "ClaimResponse")
    assert [c["type"]["coding"][0]["code"] for c in coverages] == ["basic", "second_tier",
                                                                  "assistance"]
    assert [i["sequence"] for i in claim["insurance"]] == [1, 2, 3]
    assert [i["focal"] for i in claim["insurance"]] == [True, False, False]
    adjudication = response["item"][0]["adjudication"]
    codes = [a["category"]["coding"][0] for a in adjudication]
    assert {c["system"] for c in codes} == {fhir.ADJUDICATION}
    assert sum(a["amount"]["value"] for a in adjudication) == \
        claim["total"]["value"] == Decimal("114300.00")


def test_a_reversed_settlement_is_cancelled():
    assert {r["status"] for r in _resources("reversed")} == {"cancelled"}


def test_the_validator_would_catch_a_claim_without_insurance():
    claim = next(r for r in _resources() if r["resourceType"] == "Claim")
    broken = {k: v for k, v in claim.items() if k != "insurance"}
    assert problems([broken]) != [[]]

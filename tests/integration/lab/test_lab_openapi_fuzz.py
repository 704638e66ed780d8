"""The lab's HTTP API keeps its OpenAPI contract under a property-based run of
schemathesis (issue 9, "The OpenAPI is a contract too"): the served document,
a token for each role (and none), orders in every state; no 5xx, no status or
body the document does not list, no request value in an answer or a log line.
See tests/openapi_fuzz.py; a service with an HTTP API gets a module like this one."""

from __future__ import annotations

import pytest
from labflow import order
from labjourney import (
    GOOD,
    LAB_CENTRE,
    OTHER_CENTRE,
    OTHER_CLINIC,
    confirm,
    fetchval,
    new_patient,
    obs,
    one,
    ordered_tube,
    physician,
    receive,
    report_results,
    technologist,
    verified_order,
)
from openapi_fuzz import fuzz_service
from yigongti_kit.auth import issue_token

# schemathesis's own strategies draw from `random`; Hypothesis says so, thousands of times.
pytestmark = pytest.mark.filterwarnings(
    "ignore::hypothesis.errors.HypothesisDeprecationWarning")

# Examples per operation and mode: about 3,300 requests, a minute and a half.
MAX_EXAMPLES = 150


def callers(dev_keys) -> dict[str, dict[str, str]]:
    def bearer(institution: str, roles: list[str]) -> dict[str, str]:
        token = issue_token(dev_keys.auth_private_pem, user="u-fuzz", institution=institution,
                            roles=roles, audience="lab", ttl_s=3600)
        return {"Authorization": f"Bearer {token}"}

    clinic = dev_keys.institution_id
    return {
        "clinician": bearer(clinic, ["clinician"]),
        "clinic_terminal": bearer(clinic, ["clinic_terminal"]),
        "other_clinic": bearer(OTHER_CLINIC, ["clinician"]),
        "technologist": bearer(LAB_CENTRE, ["lab_technologist"]),
        "physician": bearer(LAB_CENTRE, ["lab_physician"]),
        "other_centre": bearer(OTHER_CENTRE, ["lab_technologist", "lab_physician"]),
        "no_role": bearer(clinic, []),
        "anonymous": {},
    }


async def seed_every_state(lab, dev_keys) -> dict[str, list[str]]:
    """Orders in every state the API acts on, and their tubes, critical values,
    patients and observations: path parameters and ids the run draws from."""
    fresh = order(dev_keys.institution_id, patient_ref=new_patient())
    await lab.terminal.publish(fresh)
    await one(lab, "order.accepted.v1", order_id=fresh.order_id)    # ordered
    transit = await ordered_tube(lab, dev_keys, ("K",))              # in transit
    received = await ordered_tube(lab, dev_keys, ("K", "NA"))
    await receive(lab, dev_keys, received[1].barcode)               # received
    rejected = await ordered_tube(lab, dev_keys, ("K",))
    await receive(lab, dev_keys, rejected[1].barcode,               # rejected, recollect
                  {**GOOD, "not_haemolysed": False})
    reported = await ordered_tube(lab, dev_keys, ("K", "NA"))
    await receive(lab, dev_keys, reported[1].barcode)
    await report_results(lab, dev_keys, reported[1].barcode,         # awaiting confirmation
                         obs("K", "4.1"), obs("NA", "140"))
    critical = await ordered_tube(lab, dev_keys, ("K",))
    await receive(lab, dev_keys, critical[1].barcode)
    await report_results(lab, dev_keys, critical[1].barcode, obs("K", "6.9"))
    await confirm(lab, dev_keys, critical[1].barcode)               # awaiting verification
    raised = await one(lab, "critical_value.raised.v1", barcode=critical[1].barcode)
    answered = await ordered_tube(lab, dev_keys, ("K",))
    await receive(lab, dev_keys, answered[1].barcode)
    await report_results(lab, dev_keys, answered[1].barcode, obs("K", "7.0"))
    await confirm(lab, dev_keys, answered[1].barcode)
    acked = await one(lab, "critical_value.raised.v1", barcode=answered[1].barcode)
    async with technologist(lab, dev_keys) as staff:                # acknowledged
        response = await staff.post(f"/critical-values/{acked['critical_id']}/call-backs",
                                    json={"outcome": "confirmed_read_back", "reached": "doc-17"})
        assert response.status_code == 200, response.text
    verified = await verified_order(lab, dev_keys, ("K", "NA"))     # verified
    amended = await verified_order(lab, dev_keys, ("K",))
    observation = await fetchval(lab, "SELECT observation_id FROM results WHERE order_id = $1",
                                 amended[0].order_id)
    async with physician(lab, dev_keys) as doctor:                  # amended
        response = await doctor.post(f"/orders/{amended[0].order_id}/amend", json={
            "observation_id": observation, "value": "4.4", "reason": "transcription_error"})
        assert response.status_code == 200, response.text

    orders = [transit, received, rejected, reported, critical, answered, verified, amended]
    async with lab.pool.acquire() as conn:
        observations = [r["observation_id"] for r in await conn.fetch(
            "SELECT observation_id FROM results ORDER BY 1")]
    return {
        "order_id": [fresh.order_id] + [o.order_id for o, _ in orders] + ["O-absent"],
        "barcode": [t.barcode for _, t in orders] + ["BABSENT01"],
        "critical_id": [raised["critical_id"], acked["critical_id"], "C-absent"],
        "patient_ref": sorted({o.patient_ref for o, _ in orders}),
        "observation_id": observations,
    }


@pytest.mark.timeout(600)
async def test_the_lab_keeps_its_openapi_contract_under_schemathesis(lab, dev_keys):
    seeds = await seed_every_state(lab, dev_keys)
    who = callers(dev_keys)
    base_url = f"http://{lab.settings.http_host}:{lab.settings.http_port}"
    report = await fuzz_service("lab", base_url, who, seeds, max_examples=MAX_EXAMPLES,
                                fixed={"GET /feed": {"query": {"wait": 0}}})
    assert not report.failures, report.summary()

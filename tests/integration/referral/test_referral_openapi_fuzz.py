"""The referral HTTP API keeps its OpenAPI contract under schemathesis (as the
lab's, tests/openapi_fuzz.py): the served document, a token for each role
(and none, and another county's), referrals in several states; no 5xx, no
status or body the document does not list, no request value in an answer or
a log line."""

from __future__ import annotations

import pytest
from openapi_fuzz import fuzz_service
from referralflow import COUNTY, DAFENG, TOWNSHIP, accept, down, now, of, up
from yigongti_contracts.referral import v1
from yigongti_kit.auth import issue_token

pytestmark = pytest.mark.filterwarnings(
    "ignore::hypothesis.errors.HypothesisDeprecationWarning")

MAX_EXAMPLES = 40


def callers(referral) -> dict[str, dict[str, str]]:
    def bearer(institution: str, roles: list[str]) -> dict[str, str]:
        token = issue_token(referral.auth_key, user="u-fuzz", institution=institution,
                            roles=roles, audience="referral", ttl_s=3600)
        return {"Authorization": f"Bearer {token}"}

    return {
        "township_coordinator": bearer(TOWNSHIP, ["referral_coordinator"]),
        "county_coordinator": bearer(COUNTY, ["referral_coordinator"]),
        "clinician": bearer(TOWNSHIP, ["clinician"]),
        "other_county": bearer(DAFENG, ["referral_coordinator"]),
        "no_role": bearer(TOWNSHIP, []),
        "anonymous": {},
    }


async def seed(referral) -> dict[str, list[str]]:
    requested, accepted, closed_down = up(), up(), down()
    await referral.send(TOWNSHIP, requested)
    await referral.send(TOWNSHIP, accepted)
    await referral.send(COUNTY, accept(accepted.referral_id))
    await referral.send(COUNTY, closed_down)
    await referral.send(TOWNSHIP, accept(closed_down.referral_id))
    await referral.send(TOWNSHIP, v1.PatientArrived(referral_id=closed_down.referral_id,
                                                    arrived_at=now()))
    await referral.wait(of(accepted.referral_id, "referral.accepted.v1"))
    await referral.wait(of(closed_down.referral_id, "referral.closed.v1"))
    return {"referral_id": [requested.referral_id, accepted.referral_id,
                            closed_down.referral_id, "REF-absent"]}


@pytest.mark.timeout(600)
async def test_the_referral_api_keeps_its_openapi_contract(referral) -> None:
    seeds = await seed(referral)
    who = callers(referral)
    settings = referral.runtime.settings
    base_url = f"http://{settings.http_host}:{settings.http_port}"
    report = await fuzz_service("referral", base_url, who, seeds, max_examples=MAX_EXAMPLES,
                                fixed={"GET /feed": {"query": {"wait": 0}}})
    assert not report.failures, report.summary()

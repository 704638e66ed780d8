"""Who may refer to whom, where a failed upward referral goes next, and which
critical finding suggests a referral to where."""

from __future__ import annotations

import pytest
from referralcases import COUNTY, PATIENT, RULES, T0, TOWNSHIP, down, minutes, up
from yigongti_contracts.refdata import Capability
from yigongti_referral.codes import DownwardReason, Refusal, UpwardReason, Urgency
from yigongti_referral.facts import CriticalFindingRaised
from yigongti_referral.routing import next_candidate, referral_problems, suggest

P01, P02 = "652300-P01", "652300-P02"


@pytest.mark.parametrize("frm,to,capability", [
    (TOWNSHIP, COUNTY, Capability.chest_pain_centre),  # township → its total hospital
    ("652325-V01", "652325-B01", None),  # village → its township
    ("652325-V01", "652325-H01", None),  # village → its total hospital, past the township
    ("652325-H01", P01, None),  # county → prefecture
    ("652325-B01", P01, Capability.chest_pain_centre),  # 奇台 has no chest-pain centre
    ("652302-H01", P02, Capability.dialysis),
])
def test_upward_referrals_allowed(frm, to, capability) -> None:
    assert referral_problems(up(frm=frm, to=to, capability=capability), RULES.refdata) == []


@pytest.mark.parametrize("frm,to", [
    ("652323-H01", "652323-B01"),  # county → its township
    ("652325-H01", "652325-V01"),  # county → a village of its community
    (P01, "652328-B01"),  # prefecture → any township
    (P01, "652325-H01"),  # prefecture → a county
    ("652325-B01", "652325-V01"),  # township → its village
])
def test_downward_referrals_allowed(frm, to) -> None:
    assert referral_problems(down(frm=frm, to=to), RULES.refdata) == []


@pytest.mark.parametrize("request_,field,reason", [
    (up(to="652399-H01"), "to_institution", Refusal.unknown_institution),
    (up(frm="652399-B01"), "from_institution", Refusal.unknown_institution),
    (up(to="652301-L01", capability=None), "to_institution",
     Refusal.not_a_clinical_institution),
    (up(frm="652301-E01", capability=None), "from_institution",
     Refusal.not_a_clinical_institution),
    (up(to=TOWNSHIP), "to_institution", Refusal.same_institution),
    (up(frm=COUNTY, to=TOWNSHIP, capability=None), "direction", Refusal.wrong_direction),
    (up(frm="652325-H01", to="652302-H01", capability=None), "direction",
     Refusal.wrong_direction),  # county to county is not up
    (down(frm="652323-B01", to="652323-H01"), "direction", Refusal.wrong_direction),
    (up(frm="652325-B01", to="652302-H01"), "to_institution",
     Refusal.outside_community),  # 奇台 township to 阜康's cath lab
    (down(frm="652323-H01", to="652325-B01"), "to_institution", Refusal.outside_community),
    (up(to=P02), "to_institution", Refusal.skips_level),  # the county centre could take it
    (up(to=P01, capability=None), "to_institution", Refusal.skips_level),
    (up(frm="652325-B01", to="652325-H01"), "to_institution", Refusal.lacks_capability),
    (up(to=COUNTY, capability=Capability.dialysis), "to_institution",
     Refusal.lacks_capability),
    (up(reason=DownwardReason.patient_request), "reason", Refusal.reason_not_for_direction),
    (down(reason=UpwardReason.diagnosis_unclear), "reason",
     Refusal.reason_not_for_direction),
    (down(care_plan=None), "care_plan", Refusal.care_plan_missing),
])
def test_referrals_refused_with_a_reason(request_, field, reason) -> None:
    assert (field, reason) in referral_problems(request_, RULES.refdata)


def test_a_reroute_child_may_pass_over_the_own_county() -> None:
    assert referral_problems(up(to=P02), RULES.refdata, rerouted=True) == []


def test_next_candidate_skips_what_the_chain_tried() -> None:
    request = up()
    assert next_candidate(request, (COUNTY,), RULES.refdata, RULES.policy) == P02
    assert next_candidate(request, (COUNTY, P02), RULES.refdata, RULES.policy) == P01
    assert next_candidate(request, (COUNTY, P02, P01), RULES.refdata, RULES.policy) is None


def test_next_candidate_takes_the_decliners_alternative_if_it_can() -> None:
    request = up()
    assert next_candidate(request, (COUNTY,), RULES.refdata, RULES.policy, P01) == P01
    # 佃坝镇分院 cannot take a STEMI: the rule's next instead
    assert next_candidate(request, (COUNTY,), RULES.refdata, RULES.policy,
                          "652301-B01") == P02
    # already tried
    assert next_candidate(request, (COUNTY, P01), RULES.refdata, RULES.policy, P01) == P02


def finding(institution: str = TOWNSHIP, modality: str = "ECG",
            conclusion: str = "I21.0") -> CriticalFindingRaised:
    return CriticalFindingRaised("DX-1", PATIENT, institution, modality, conclusion, T0)


def test_stemi_at_the_township_suggests_the_county_chest_pain_centre() -> None:
    s = suggest(finding(), RULES.refdata, RULES.policy, minutes(0.05))
    assert s is not None
    assert (s.from_institution, s.to_institution, s.capability, s.urgency, s.finding) == \
        (TOWNSHIP, COUNTY, Capability.chest_pain_centre, Urgency.emergency, "stemi")
    assert (s.finding_raised_at, s.suggested_at) == (T0, minutes(0.05))
    assert s.patient_ref == PATIENT and s.diagnosis_request_id == "DX-1"


def test_the_suggestion_id_is_the_same_on_a_replay() -> None:
    a = suggest(finding(), RULES.refdata, RULES.policy, minutes(1))
    b = suggest(finding(), RULES.refdata, RULES.policy, minutes(2))
    assert a is not None and b is not None and a.suggestion_id == b.suggestion_id


@pytest.mark.parametrize("f,to", [
    (finding("652325-B01"), P01),  # 奇台: its county has no chest-pain centre
    (finding("652325-H01"), P01),
    (finding(conclusion="I21.000x001"), COUNTY),  # national clinical edition code
    (finding("652328-B01", "CT", "I63.9"), P01),  # 木垒 stroke
    (finding(conclusion="I44.2"), COUNTY),  # complete AV block
    (finding("652325-B01", "ECG", "I49.0"), P01),  # VF → intensive care
    (finding("652325-B01", "CT", "I71.0"), P01),  # aortic dissection
])
def test_findings_on_the_list_suggest_the_nearest_capable(f, to) -> None:
    s = suggest(f, RULES.refdata, RULES.policy, minutes(1))
    assert s is not None and s.to_institution == to


@pytest.mark.parametrize("f", [
    finding("652302-H01"),  # 阜康 has its own cath lab
    finding(P01),  # nothing above
    finding(conclusion="I21.4"),  # NSTEMI is not on the list
    finding(conclusion="I48"),  # atrial fibrillation
    finding(modality="CT"),  # a STEMI code is an ECG conclusion
    finding("652399-B01"),  # unknown institution: recorded by the service, not suggested
])
def test_no_suggestion(f) -> None:
    assert suggest(f, RULES.refdata, RULES.policy, minutes(1)) is None


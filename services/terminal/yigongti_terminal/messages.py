"""Every refusal in words a clinic nurse understands, with the code beside it.

Three kinds: the intake reason codes a service answers with (IntakeRejected:
the platform's and each service's own), the codes of records that are never
answered (the terminal learns them only from ops, but explains them when it
does), and the HTTP refusals (401 token reasons, 403, 404, 413, 422, 503).
tests/unit/terminal/test_terminal_messages.py fails when a documented code
has no message here.
"""

from __future__ import annotations

from yigongti_kit.auth import TOKEN_ERRORS  # noqa: F401 - the 401 codes; the test compares

ASK_IT = "Ask the IT helpdesk of the county hospital."

PLATFORM: dict[str, str] = {
    "malformed_json": "The terminal sent something the county could not read. " + ASK_IT,
    "schema_violation": "Some details were missing or not in the right form, so it was not "
                        "recorded. Check the fields named below and enter it again.",
    "unknown_type": "The county does not take this kind of record here. " + ASK_IT,
    "missing_header": "The record was incomplete when it left the terminal. " + ASK_IT,
    "bad_header": "The record was damaged when it left the terminal. " + ASK_IT,
    "duplicate_header": "The record was damaged when it left the terminal. " + ASK_IT,
    "unsupported_specversion": "This terminal's software is too old or too new for the "
                               "county. " + ASK_IT,
    "bad_content_type": "The record was damaged when it left the terminal. " + ASK_IT,
    "key_mismatch": "The record was addressed wrongly by the terminal. " + ASK_IT,
    "oversized": "The record is too large to send. Send fewer items at once.",
    "replayed_nonce": "The county saw this exact sending before and ignored it as a "
                      "possible copy. If it did not arrive, send it again.",
    "forbidden_institution": "This clinic may not send this: the order or tube belongs to "
                             "another clinic.",
    "duplicate_id_conflict": "The county already has a different record under the same "
                             "number. " + ASK_IT,
    "processing_error": "The county's system failed on this record. Do not send it again: "
                        "the IT staff will replay it.",
}

UNVERIFIED: dict[str, str] = {
    "missing_signature": "The record was not signed by this terminal, so the county ignored "
                         "it. " + ASK_IT,
    "source_mismatch": "The record did not say which terminal it came from correctly, so the "
                       "county ignored it. " + ASK_IT,
    "unknown_terminal": "The county does not know this terminal (or it was switched off). "
                        + ASK_IT,
    "bad_signature": "The terminal's signature did not check out, so the county ignored the "
                     "record. " + ASK_IT,
    "stale_timestamp": "The record arrived too late after it was signed, or the terminal's "
                       "clock is wrong. Check the clock; the terminal sends it again.",
}

SERVICE: dict[str, dict[str, str]] = {
    "lab": {
        "unknown_institution": "The lab does not know this clinic, or no lab centre serves "
                               "it. " + ASK_IT,
        "unknown_test": "One of the tests is not in the lab's list. Choose it from the list.",
        "not_orderable": "One of the tests is only done as part of a panel. Order the panel.",
        "duplicate_test": "The same test is on the order twice. Keep it once.",
        "order_exists": "An order with this number exists already. Use a new order number.",
        "test_not_ordered": "A test on this tube is not on the order.",
        "test_collected": "A test on this tube was already collected in another tube.",
        "test_resulted": "A test on this tube already has a result.",
        "test_confirmed": "A test on this tube already has a confirmed result.",
        "test_verified": "A test on this tube is already reported.",
        "test_cancelled": "A test on this tube was cancelled.",
        "test_avoided": "A test on this tube is not needed: a recent recognised result "
                        "answers it (互认).",
        "wrong_tube": "This is the wrong tube for one of the tests. Use the tube the list "
                      "says.",
        "before_collection": "The centrifuge time is before the collection time. Check the "
                             "times.",
        "not_a_rejected_tube_of_the_order": "The tube being replaced is not a rejected tube "
                                            "of this order.",
        "barcode_already_collected": "A tube with this barcode was already collected. Use a "
                                     "new barcode label.",
        "nothing_to_cancel": "Nothing on this order can still be cancelled.",
        "test_already_resulted": "A test already has a result and cannot be cancelled. Call "
                                 "the lab to ask for a correction.",
        "specimen_rejected": "The lab rejected this tube when it arrived. Collect again if the "
                             "lab asks.",
        "specimen_cancelled": "Every test of this tube was cancelled.",
        "not_ordered": "The analyser reported a test that was not ordered for this tube.",
        "already_confirmed": "This result is already confirmed; a correction is made at the "
                             "lab.",
        "unit_mismatch": "The analyser reported a result in the wrong unit.",
        "repeated_line": "The analyser reported the same test twice in one run.",
        "unknown_critical_value": "The lab has no such critical value for this order. Check "
                                  "the order number and the critical value number.",
        "prerequisite_missing": "What this record refers to (the order, the tube or its "
                                "arrival at the lab) never reached the lab. Check it was "
                                "sent.",
    },
    # The other services' codes as their branches publish them (kept here ahead of
    # their merge; the test checks whatever the registry lists).
    "diagnosis": {
        "unknown_institution": "The county does not know this clinic, or no reading centre "
                               "reads this kind of examination for it. " + ASK_IT,
        "request_exists": "A request with this number exists already. Use a new number.",
        "unknown_recording": "The ECG was not found: it was uploaded by another clinic, or "
                             "already used for another request. Send the ECG again.",
        "accession_mismatch": "The study on the county's image server has another accession "
                              "number. Check both and send again.",
        "study_not_found": "The images never reached the county's image server. Send the "
                           "images first, then the request again.",
        "modality_mismatch": "The images on the county's server are not of the kind asked "
                             "for (ECG, X-ray, CT, ultrasound, MR).",
        "unknown_request": "No such request. Check its number.",
        "unknown_finding": "No such critical finding on this request. Check its number.",
        "already_reported": "The report is signed already and the request cannot be "
                            "withdrawn. Ask the reading centre for a correction.",
        "already_withdrawn": "This request was withdrawn already.",
    },
    "referral": {
        "unknown_institution": "The hospital or clinic is not one of the medical community. "
                               "Check where the patient is referred.",
        "not_a_clinical_institution": "A lab, ECG or imaging centre does not take referred "
                                      "patients. Choose a hospital or clinic.",
        "same_institution": "A clinic cannot refer a patient to itself.",
        "wrong_direction": "An upward referral goes to a higher level, a downward one to a "
                           "lower level.",
        "outside_community": "That hospital belongs to another county's medical community.",
        "skips_level": "Refer the patient to your own county hospital first: it can take "
                       "them.",
        "lacks_capability": "That hospital cannot give the care this patient needs. Choose "
                            "another.",
        "reason_not_for_direction": "This reason is not one for this direction of referral.",
        "care_plan_missing": "A referral back to the clinic needs its continuing-care plan.",
        "forbidden_institution": "Only the other end of the referral may record this.",
        "referral_id_in_use": "A referral with this number exists already. Use a new number.",
        "validity_ended": "The patient arrived after the referral was no longer valid.",
        "departure_after_arrival": "The departure time is after the arrival time. Check the "
                                   "times.",
        "not_upward": "A discharge summary closes only referrals up to the hospital.",
        "no_follow_up_plan": "Follow-up visits belong to referrals back to the clinic.",
        "unknown_round": "That day is not a follow-up visit of the care plan.",
        "decline_reason_missing": "Give the reason for declining.",
        "already_accepted": "The referral was accepted already; it cannot be declined now.",
        "already_declined": "The referral was declined already; it cannot be accepted now.",
        "already_closed": "The referral is closed already with another discharge summary.",
        "patient_departed": "The patient has left already; the referral cannot be declined "
                            "or cancelled now.",
        "prerequisite_missing": "The referral request this refers to never arrived. Check it "
                                "was sent.",
        "parent_not_found": "The earlier referral named is not known.",
        "parent_not_reroutable": "The earlier referral was not declined or expired, so it "
                                 "cannot be sent elsewhere.",
        "parent_mismatch": "The earlier referral is for another patient, sender or "
                           "direction.",
        "already_rerouted": "The earlier referral was sent elsewhere already.",
        "already_tried": "This hospital was already tried for this patient.",
        "case_closed": "The referral is closed.",
        "case_declined": "The referral was declined.",
        "case_expired": "The referral expired.",
        "case_withdrawn": "The referral was withdrawn.",
        "case_lost": "The referral was lost. Call the hospital.",
    },
    "settlement": {
        "identity_unknown": "The patient's identity was not verified at this clinic. Scan "
                            "again.",
        "identity_not_for_visit": "The identity check was made for another visit. Scan "
                                  "again for this visit.",
        "deceased": "The insurance records this person as dead on this date. Do not settle; "
                    "call the insurance office.",
        "unknown_institution": "The insurance does not know this clinic. " + ASK_IT,
        "no_policy": "No insurance benefit table applies to this patient on this date. Call "
                     "the insurance office.",
        "nothing_to_settle": "There is nothing to pay on this visit.",
        "out_biz_no_reused": "This payment number was used for another payment. " + ASK_IT,
        "audit_refused": "The insurance rules refused this payment. Call the insurance "
                         "office.",
        "unknown_settlement": "No such completed payment at this clinic.",
        "already_reversed": "This payment was reversed already.",
        "not_latest": "A later payment of this patient this year must be reversed first.",
        "not_eligible_for_treat_first": "This patient cannot be treated first and pay later "
                                        "here. Settle at the counter now.",
    },
}

# HTTP refusals: the 401 reasons (kit auth.TOKEN_ERRORS), then by status.
TOKEN: dict[str, str] = {
    "missing_token": "The terminal is not signed in to this service. " + ASK_IT,
    "expired": "The terminal's sign-in has expired. Sign in again.",
    "bad_signature": "The terminal's sign-in was not accepted. " + ASK_IT,
    "wrong_audience": "The terminal's sign-in is for another service. " + ASK_IT,
    "wrong_issuer": "The terminal's sign-in comes from an unknown place. " + ASK_IT,
    "missing_claim": "The terminal's sign-in is incomplete. " + ASK_IT,
    "bad_claim": "The terminal's sign-in is damaged. " + ASK_IT,
    "malformed": "The terminal's sign-in is damaged. " + ASK_IT,
}
HTTP_STATUS: dict[int, str] = {
    400: "The county could not understand the request. " + ASK_IT,
    401: "The terminal is not signed in to this service. " + ASK_IT,
    403: "Your sign-in does not allow this here.",
    404: "Not found, or not this clinic's.",
    409: "This cannot be done in the state it is in now.",
    413: "What was sent is too large.",
    422: "Some details were missing or not in the right form. Check the fields named below.",
    429: "The county is busy. Try again in a minute.",
    503: "The county's system is down for a moment. Try again in a minute.",
}
# The detail phrases services give with 403/404 (lab api.py).
HTTP_DETAIL: dict[str, str] = {
    "no such order": "No such order for this clinic. Check the order number.",
    "no such specimen": "No such tube. Check the barcode.",
    "no such critical value": "No such critical value. Check its number.",
    "no such critical finding": "No such critical finding. Check its number.",
    "no such patient": "This clinic has no orders for this patient.",
    "no such result on this order": "This order has no such result. Check the order number.",
    "body_too_large": "What was sent is too large.",
    "no match": "No insured person with this ID number. Check the number.",
    "too many look-ups": "Too many look-ups from this terminal. Wait a minute.",
    "no such settlement": "No such payment at this clinic. Check its number.",
    # The settlement service's identity check (403/409 with a reason).
    "face_mismatch": "The face did not match an insured person. Try again, or use the card "
                     "or the QR voucher.",
    "low_liveness": "The face scan was not clear enough. Scan again, facing the camera.",
    "stale": "The face or QR result is too old (over 60 seconds). Scan again.",
    "replayed": "This scan result was used already. Scan again.",
    "unknown_issuer": "The scan result does not come from the national platform. " + ASK_IT,
    "bad_signature": "The scan result's signature did not check out. Scan again. " + ASK_IT,
    "unknown_terminal": "The insurance does not know this terminal. " + ASK_IT,
    "revoked_terminal": "This terminal was switched off by the insurance. " + ASK_IT,
    "wrong_institution": "This terminal is registered to another clinic. " + ASK_IT,
    "deceased": "The insurance records this person as dead. Do not settle; call the "
                "insurance office.",
    "token_invalid": "The identity check expired or was used already. Identify the patient "
                     "again.",
    "out_biz_no_reused": "This counter number was used for another payment. Use a new one.",
}

# What the terminal itself says (not a service's code).
LOCAL: dict[str, str] = {
    "link_down": "The county cannot be reached now. The record is kept on this terminal and "
                 "sent as soon as the network is back (see `yigongti outbox`).",
    "unknown_patient_offline": "The network is down and this patient is not known on this "
                               "terminal, so the record cannot be kept for later. Look the "
                               "patient up when the network is back.",
    "service_not_available": "This service is not available yet in this county.",
    "read_back_mismatch": "The value or unit typed does not match what the lab sent. It was "
                          "NOT acknowledged. Read the value again, or phone the lab.",
    "not_set_up": "This terminal is not set up. " + ASK_IT,
}


def intake_reason(code: str, service: str | None = None) -> str:
    """Plain words for an intake reason code, with the code beside them."""
    words = (SERVICE.get(service or "", {}).get(code) or PLATFORM.get(code)
             or UNVERIFIED.get(code)
             or next((m[code] for m in SERVICE.values() if code in m), None)
             or "The county refused it for a reason this terminal does not know yet. "
             + ASK_IT)
    return f"{words} [{code}]"


def http_refusal(status: int, detail: object = None) -> str:
    """Plain words for an HTTP refusal, with the status and code beside them."""
    if status == 401 and isinstance(detail, str) and detail in TOKEN:
        return f"{TOKEN[detail]} [401 {detail}]"
    if isinstance(detail, str):
        key = "missing role" if detail.startswith("missing role") else detail
        words = HTTP_DETAIL.get(key) or HTTP_STATUS.get(status) or HTTP_STATUS[400]
        return f"{words} [{status} {detail}]"
    words = HTTP_STATUS.get(status) or HTTP_STATUS[400]
    if isinstance(detail, dict) and detail.get("reason"):  # e.g. a refused ECG recording
        where = f" ({detail['field']})" if detail.get("field") else ""
        return f"{words} [{status} {detail['reason']}]{where}"
    if isinstance(detail, list):  # 422: field paths and codes, never values
        fields = ", ".join(".".join(str(p) for p in d.get("loc", [])) + f" ({d.get('type')})"
                           for d in detail if isinstance(d, dict))
        return f"{words} [{status}] {fields}"
    return f"{words} [{status}]"


def local(code: str) -> str:
    return f"{LOCAL[code]} [{code}]"

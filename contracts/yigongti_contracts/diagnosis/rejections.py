"""The diagnosis service's own reason codes of `IntakeRejected` (besides the
platform's, `common.PLATFORM_REJECTION_REASONS`), each with what it means to
the sender, in plain words. Published in the AsyncAPI document and
contracts/terminal/, as the lab's are. A refusal names the first problem's code
as its reason and lists every problem in `fields` (path and code).
"""

from __future__ import annotations

REASONS: dict[str, str] = {
    # DiagnosisRequested
    "unknown_institution": "requesting_institution is not an institution of the medical "
                           "community, or no reading centre reads this modality for it.",
    "request_exists": "A request with this request_id exists already (a new ce_id with an "
                      "old request_id).",
    "unknown_recording": "recording_ref is not a recording this institution uploaded "
                         "(POST /recordings), or it was used by another request already.",
    "accession_mismatch": "The study on the county PACS has another Accession Number: "
                          "check the study and the accession number and send again.",
    "study_not_found": "The county PACS still did not have the study when the grace period "
                       "ended: send the images to the PACS, then send the request again.",
    "modality_mismatch": "The study on the PACS is not of the requested modality.",
    # CriticalFindingAck
    "unknown_request": "No request with this request_id.",
    "unknown_finding": "No critical finding with this finding_id on this request.",
    # DiagnosisCancelled
    "already_reported": "The report is signed: a request can no longer be withdrawn after "
                        "signing (ask the reading centre for an amendment).",
    "already_withdrawn": "The request was withdrawn already.",
}

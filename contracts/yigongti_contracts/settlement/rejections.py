"""The settlement service's own reason codes of `IntakeRejected` and of
`SettlementRejected` (besides the platform's), each with what it means."""

from __future__ import annotations

REASONS: dict[str, str] = {
    # SettlementRequested
    "identity_unknown": "identity_id names no verified identity of this institution.",
    "identity_not_for_visit": "The verified identity was bound to another visit.",
    "deceased": "The person is recorded dead on the date of service: refused and flagged "
                "(rule deceased_credential).",
    "unknown_institution": "institution is not an institution of the medical community.",
    "no_policy": "No benefit table is in force for the person's region on that date.",
    "nothing_to_settle": "Neither itemised lines nor unsettled posted charges on the visit.",
    "out_biz_no_reused": "This outBizNo was used with a different request.",
    "not_eligible_for_treat_first": "mode discharge (先诊疗后付费) is for assistance "
                                    "recipients; the person is in none of the categories.",
    "audit_refused": "A definite audit rule before settlement refused it.",
    # SettlementReversalRequested
    "unknown_settlement": "No completed settlement with this settlement_id for the institution.",
    "already_reversed": "The settlement was reversed already.",
    "not_latest": "A later settlement of the person in the same year must be reversed first "
                  "(reversals go latest first, as 冲正 does).",
}

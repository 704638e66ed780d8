"""The lab's own reason codes of `IntakeRejected` (besides the platform's,
`common.PLATFORM_REJECTION_REASONS`), each with what it means to the sender.

`IntakeRejected.reason` stays an open code pattern in the frozen schema (an
enum there would break old readers when a code is added); this is the
documented list, published in the AsyncAPI document and contracts/terminal/.
The lab refuses with nothing else (tests/unit/lab/test_lab_reason_codes.py
reads the lab's source to check it). A refusal names the first problem's code
as its reason and lists every problem in `fields` (path and code).
"""

from __future__ import annotations

REASONS: dict[str, str] = {
    # LabOrderPlaced
    "unknown_institution": "ordering_institution is not an institution of the medical "
                           "community, or no lab centre serves it.",
    "unknown_test": "A tests[].code is not a catalogue code (contracts/terminal/lab-catalogue.json).",
    "not_orderable": "A tests[].code is a line reported within a panel: order the panel.",
    "duplicate_test": "A test code appears twice (normally refused earlier as schema_violation).",
    "order_exists": "An order with this order_id exists already (a new ce_id with an old order_id).",
    # SpecimenCollected
    "test_not_ordered": "A listed test is not on the order.",
    "test_collected": "A listed test was collected already (in another tube).",
    "test_resulted": "A listed test has a result already.",
    "test_confirmed": "A listed test has a confirmed result already.",
    "test_verified": "A listed test is reported already.",
    "test_cancelled": "A listed test was cancelled.",
    "test_avoided": "A listed test was not done: a recognised result answered it (互认).",
    "wrong_tube": "The tube type is not the catalogue's tube for a listed test.",
    "before_collection": "centrifuged_at is before collected_at (normally refused earlier as "
                         "schema_violation).",
    "not_a_rejected_tube_of_the_order": "recollection_of is not a rejected tube of this order.",
    "barcode_already_collected": "A tube with this barcode was collected already.",
    # LabOrderCancelled
    "nothing_to_cancel": "No test of the order can still be cancelled.",
    "test_already_resulted": "A listed test is confirmed or reported: it can no longer be "
                             "cancelled (ask the lab for an amendment).",
    # AnalyserResults
    "specimen_rejected": "The tube was rejected at receipt.",
    "specimen_cancelled": "Every test of the tube was cancelled.",
    "not_ordered": "An observation's code maps to no test ordered for the tube.",
    "already_confirmed": "An observation's test has a confirmed result: a correction is an "
                         "amendment, made at the lab.",
    "unit_mismatch": "An observation's unit is not the catalogue's unit for its test.",
    "repeated_line": "The same test's line appears twice in one run.",
    # CriticalValueAck
    "unknown_critical_value": "No critical value with this critical_id for this order_id.",
    # Any record that waited for what it refers to (parked)
    "prerequisite_missing": "What the record refers to (order, tube, receipt) did not arrive "
                            "within the grace period (policy/parking.yaml); `fields` names it.",
}


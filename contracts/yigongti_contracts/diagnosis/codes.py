"""Code lists and value types of the diagnosis contracts (v1).

Enums are closed lists the contract fixes; the clinical code lists (indication
and conclusion codes, with their sources) are data in the diagnosis service
(`services/diagnosis/yigongti_diagnosis/policy/`), so here they are patterns.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import StringConstraints

from ..lab.codes import Icd10Code, Priority  # the same notions as the lab's

__all__ = ["Icd10Code", "Priority"]

# DICOM Study Instance UID: dotted numeric components, at most 64 characters (PS3.5 §9.1).
StudyInstanceUid = Annotated[
    str, StringConstraints(pattern=r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$", max_length=64)]
# DICOM Accession Number (VR SH: at most 16 characters); printable, no spaces here.
AccessionNumber = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,16}$")]
# A coded conclusion: ICD-10 of the national clinical edition where one fits
# ("I21.0" anterior STEMI), else a code of the service's list ("ECG.NORMAL").
ConclusionCode = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9]{1,7}(\.[A-Z0-9_]{1,16})?$")]
# Why the service set a priority: the rule's code ("chest_pain_under_12h",
# "suspected_stroke", "clinician_stat", "ecg_rate_below_35"…: the service's triage table).
PriorityReason = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class Modality(StrEnum):
    """DICOM modality codes of what a reading centre reads."""

    ECG = "ECG"  # 12-lead electrocardiogram
    DX = "DX"  # digital radiography
    CT = "CT"
    US = "US"  # ultrasound
    MR = "MR"


class CancellationReason(StrEnum):
    entered_in_error = "entered_in_error"
    duplicate_request = "duplicate_request"
    patient_left = "patient_left"
    clinical_decision = "clinical_decision"
    other = "other"


class ReleaseReason(StrEnum):
    released = "released"  # the reader gave it back
    lease_expired = "lease_expired"  # 15 minutes without a report


class AmendmentReason(StrEnum):
    error_corrected = "error_corrected"
    finding_added = "finding_added"
    comparison_added = "comparison_added"  # a previous study compared afterwards
    other = "other"


class AckChannel(StrEnum):
    """How the clinic took a critical finding."""

    terminal = "terminal"
    phone = "phone"
    in_person = "in_person"

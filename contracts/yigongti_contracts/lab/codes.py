"""Code lists and value types of the lab contracts (v1).

Enums are closed lists that the contract fixes; catalogue codes (tests, price
items) are validated patterns because the catalogue is data in the lab service.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import StringConstraints

# Catalogue test code: LOINC ("2823-3") where one fits, else a local code ("CBC").
TestCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")]
# Specimen tube barcode as printed on the label.
Barcode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{4,32}$")]
# UCUM unit ("mmol/L", "10*9/L", "ng/L"): printable ASCII, no spaces.
Unit = Annotated[str, StringConstraints(pattern=r"^[!-~]{1,32}$")]
# A coded (non-numeric) result: "POS", "NEG", "2+".
CodedValue = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+._-]{1,16}$")]
# Price item code of the regional medical service price table.
ItemCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.-]{1,32}$")]
# ICD-10 code of the clinical indication ("I21.9").
Icd10Code = Annotated[str, StringConstraints(pattern=r"^[A-Z][0-9]{2}(\.[0-9A-Z]{1,4})?$")]


class Priority(StrEnum):
    routine = "routine"
    urgent = "urgent"
    stat = "stat"


class TubeType(StrEnum):
    serum_gold = "serum_gold"  # gold-top serum separator tube (SST)
    lithium_heparin = "lithium_heparin"
    edta_k2 = "edta_k2"
    sodium_citrate = "sodium_citrate"
    fluoride_oxalate = "fluoride_oxalate"
    blood_culture = "blood_culture"
    urine = "urine"


class ProcessingState(StrEnum):
    """Whole blood, or centrifuged (separated serum or plasma): DESIGN §5 stability key."""

    whole_blood = "whole_blood"
    centrifuged = "centrifuged"


class OverrideReason(StrEnum):
    """Why a recognised result is repeated: the seven cases of the Changji rules
    (seed 000 «可不予互认的情形» 1–7; the 2022 national measures list six, Changji
    adds the patient's request). DESIGN §5."""

    condition_changed = "condition_changed"  # 1. 因病情变化…难以满足临床诊疗需求
    rapidly_changing = "rapidly_changing"  # 2. 在疾病发展演变过程中变化较快
    major_procedure = "major_procedure"  # 3. 手术、输血等重大医疗措施前
    emergency = "emergency"  # 4. 急诊、急救等紧急状态
    patient_request = "patient_request"  # 5. 患者或其亲属要求
    forensic_assessment = "forensic_assessment"  # 6. 司法、伤残及病退等鉴定
    other_clinical_need = "other_clinical_need"  # 7. 其他情形确需复查


class RejectionReason(StrEnum):
    """Specimen rejection at receipt (DESIGN §5; domain-rules §5)."""

    haemolysed = "haemolysed"  # free haemoglobin > 1.0 g/L (domain-rules §5)
    lipaemic = "lipaemic"
    clotted = "clotted"
    insufficient_volume = "insufficient_volume"
    wrong_tube = "wrong_tube"
    unlabelled = "unlabelled"
    label_mismatch = "label_mismatch"
    transport_time_exceeded = "transport_time_exceeded"
    temperature_excursion = "temperature_excursion"


class Flag(StrEnum):
    """Abnormal flag against the reference range (HL7 v2 OBX-8 / FHIR interpretation)."""

    H = "H"
    L = "L"
    N = "N"
    A = "A"  # abnormal coded result (no numeric range)


class Comparator(StrEnum):
    lt = "<"
    le = "<="
    gt = ">"
    ge = ">="


class CriticalDirection(StrEnum):
    low = "low"
    high = "high"
    abnormal = "abnormal"  # a coded result on the critical list


class CallBackOutcome(StrEnum):
    confirmed_read_back = "confirmed_read_back"
    reached_no_read_back = "reached_no_read_back"
    unable_to_reach = "unable_to_reach"


class AckChannel(StrEnum):
    terminal = "terminal"  # CriticalValueAck on intake
    call_back = "call_back"  # read back on the lab's telephone call-back


class CancellationReason(StrEnum):
    ordered_in_error = "ordered_in_error"
    duplicate_order = "duplicate_order"
    patient_declined = "patient_declined"
    patient_left = "patient_left"
    patient_deceased = "patient_deceased"
    clinical_change = "clinical_change"
    specimen_unobtainable = "specimen_unobtainable"
    other = "other"


class AmendmentReason(StrEnum):
    transcription_error = "transcription_error"
    analytical_error = "analytical_error"
    wrong_specimen = "wrong_specimen"
    calculation_error = "calculation_error"
    reference_range_error = "reference_range_error"
    other = "other"


class PolicyCategory(StrEnum):
    """Insurance category of a charge item: 甲类 a, 乙类 b, 丙类 c."""

    a = "a"
    b = "b"
    c = "c"


class ReversalReason(StrEnum):
    test_cancelled = "test_cancelled"
    order_cancelled = "order_cancelled"
    posted_in_error = "posted_in_error"

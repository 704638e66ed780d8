"""Types of the lab's HTTP fields and path parameters: the contracts' patterns,
checked as the OpenAPI document states them (issue 9: what the schema refuses,
the service refuses)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Path
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError
from yigongti_contracts.common import ID_PATTERN, QUANTITY_PATTERN, Quantity
from yigongti_contracts.lab.codes import Barcode
from yigongti_contracts.patient_ref import PATIENT_REF_PATTERN

BARCODE_PATTERN = Barcode.__metadata__[0].pattern

# Path parameters: anything but the id's own form is a 422 before a query runs.
OrderId = Annotated[str, Path(pattern=ID_PATTERN, description="An order id.")]
CriticalId = Annotated[str, Path(pattern=ID_PATTERN, description="A critical value's id.")]
BarcodePath = Annotated[str, Path(pattern=BARCODE_PATTERN, description="A tube's barcode.")]
PatientRefPath = Annotated[str, Path(pattern=PATIENT_REF_PATTERN,
                                     description="A pseudonymous patient_ref.")]


def _written_as_documented(value: Any) -> Any:
    if not isinstance(value, str) or not re.fullmatch(QUANTITY_PATTERN, value):
        raise PydanticCustomError("quantity_pattern",
                                  "a decimal string: 12 integer digits, 6 decimals at most")
    return value


DecimalText = Annotated[Quantity, BeforeValidator(_written_as_documented)]
"""A contracts Quantity (Decimal), accepted only as its documented pattern: a
string such as "4.50"; "1e3", " 4.5", 4.5 and "1e13" are refused."""

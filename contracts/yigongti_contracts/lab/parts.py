"""Nested parts of the lab v1 contracts: test lines, observations, references."""

from __future__ import annotations

from pydantic import Field, model_validator

from ..base import Part
from ..common import Identifier, InstitutionId, Quantity, UtcDateTime
from .codes import CodedValue, Comparator, Flag, OverrideReason, TestCode, Unit


class OrderedTest(Part):
    """One ordered test; `override_reason` repeats a test that has a recognised result."""

    code: TestCode
    override_reason: OverrideReason | None = None


class _Value(Part):
    """A result value: numeric (with unit, maybe a comparator) or coded."""

    code: TestCode
    value: Quantity | None = None
    comparator: Comparator | None = Field(
        default=None, description='Beyond the measuring range: "<0.01" is value 0.01 with "<".'
    )
    coded_value: CodedValue | None = None
    unit: Unit | None = None

    @model_validator(mode="after")
    def _numeric_or_coded(self) -> _Value:
        if (self.value is None) == (self.coded_value is None):
            raise ValueError("exactly one of value and coded_value")
        if self.value is None and (self.comparator is not None or self.unit is not None):
            raise ValueError("comparator and unit belong to a numeric value")
        if self.value is not None and self.unit is None:
            raise ValueError("a numeric value needs its unit")
        return self


class AnalyserObservation(_Value):
    """One result line from an analyser, before reference ranges are applied."""


class Observation(_Value):
    """A result with its reference range and flags, as the lab reports it."""

    observation_id: Identifier
    reference_low: Quantity | None = None
    reference_high: Quantity | None = None
    flag: Flag
    critical: bool = False
    delta_check_failed: bool = False


class Recognition(Part):
    """An observation of a verified report that is a recognised result (互认结果)."""

    observation_id: Identifier
    code: TestCode
    valid_until: UtcDateTime


class RecognisedResult(Part):
    """A recognised result reused instead of repeating the test."""

    report_id: Identifier
    report_revision: int = Field(ge=1)
    observation_id: Identifier
    performed_by: InstitutionId = Field(description="The lab centre that performed it.")
    verified_at: UtcDateTime
    valid_until: UtcDateTime

    @model_validator(mode="after")
    def _window(self) -> RecognisedResult:
        if self.valid_until <= self.verified_at:
            raise ValueError("valid_until must be after verified_at")
        return self


class Inspection(Part):
    """The checks at receipt (DESIGN §5): each true when the specimen passes."""

    not_haemolysed: bool
    not_lipaemic: bool
    not_clotted: bool
    volume_sufficient: bool
    right_tube: bool
    label_matches: bool
    free_haemoglobin_g_per_l: Quantity | None = None


class LoggerReadout(Part):
    """The transport box's temperature logger, read at receipt."""

    logger_id: Identifier
    min_celsius: Quantity
    max_celsius: Quantity
    minutes_outside_band: int = Field(ge=0)

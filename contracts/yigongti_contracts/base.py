"""Base classes of every contract model.

Strict where we decide what is valid (intake from outside, what a service
publishes); tolerant where we read another service's events, so additive
changes on their side never break us.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Intake records and published events: unknown fields are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    CE_TYPE: ClassVar[str] = ""
    # Name of the field whose value is the Kafka key (the aggregate id).
    KEY_FIELD: ClassVar[str] = ""

    def kafka_key(self) -> str:
        return str(getattr(self, self.KEY_FIELD))


class TolerantModel(BaseModel):
    """A reader's view of another service's event: unknown fields are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Part(BaseModel):
    """A nested part of a strict model (a test line, an observation)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

"""Who sent an intake record and where its answer goes (kept with a parked record)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from yigongti_kit.consumer import Intake


@dataclass(frozen=True)
class Origin:
    ce_id: str
    ce_type: str
    ce_source: str
    answer_key: str
    sender_institution: str | None

    @classmethod
    def of(cls, intake: Intake) -> Origin:
        return cls(intake.envelope.id, intake.envelope.type, intake.envelope.source,
                   intake.event.kafka_key(),
                   intake.sender.institution_id if intake.sender else None)

    def to_dict(self) -> dict:
        return asdict(self)

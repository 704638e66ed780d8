"""Every contract by its `ce_type`, and which of them are frozen (DESIGN §4)."""

from __future__ import annotations

from types import ModuleType

from . import common
from .base import StrictModel
from .diagnosis import rejections as diagnosis_rejections
from .diagnosis import v1 as diagnosis_v1
from .lab import rejections as lab_rejections
from .lab import v1 as lab_v1
from .referral import rejections as referral_rejections
from .referral import v1 as referral_v1
from .settlement import rejections as settlement_rejections
from .settlement import v1 as settlement_v1

# Each module lists its models in CONTRACTS and says whether they are FROZEN.
CONTRACT_MODULES: tuple[ModuleType, ...] = (common, lab_v1, diagnosis_v1, referral_v1, settlement_v1)


def _index(modules: tuple[ModuleType, ...]) -> dict[str, type[StrictModel]]:
    index: dict[str, type[StrictModel]] = {}
    for module in modules:
        for model in module.CONTRACTS:
            if model.CE_TYPE in index:
                raise RuntimeError(f"two contracts share ce_type {model.CE_TYPE}")
            index[model.CE_TYPE] = model
    return index


MODELS: dict[str, type[StrictModel]] = _index(CONTRACT_MODULES)
FROZEN: dict[str, type[StrictModel]] = _index(
    tuple(m for m in CONTRACT_MODULES if m.FROZEN)
)


def model_for(ce_type: str) -> type[StrictModel] | None:
    """The model of a `ce_type`, or None when the type is unknown."""
    return MODELS.get(ce_type)


# What each service publishes on its events topic: a subscriber accepts these
# types from that topic and nothing else (DESIGN §2: only the owner writes it).
EVENTS_BY_OWNER: dict[str, tuple[type[StrictModel], ...]] = {
    "lab": lab_v1.EVENTS + (common.IntakeRejected,),
    "diagnosis": diagnosis_v1.EVENTS + (common.IntakeRejected,),
    "referral": referral_v1.EVENTS + (common.IntakeRejected,),
    "settlement": settlement_v1.EVENTS + (common.IntakeRejected,),
}


def published_by(owner: str) -> dict[str, type[StrictModel]]:
    """ce_type → model of every event `owner` publishes (empty for an unknown owner)."""
    return {m.CE_TYPE: m for m in EVENTS_BY_OWNER.get(owner, ())}


# What each service takes on its intake topic (`<service>.intake.v1`).
INTAKE_BY_SERVICE: dict[str, tuple[type[StrictModel], ...]] = {
    "lab": lab_v1.INTAKE,
    "diagnosis": diagnosis_v1.INTAKE,
    "referral": referral_v1.INTAKE,
    "settlement": settlement_v1.INTAKE,
}

# Each service's contract module (INTAKE and EVENTS), drafts included.
SERVICE_MODULES: dict[str, ModuleType] = {"lab": lab_v1, "diagnosis": diagnosis_v1,
                                          "referral": referral_v1,
                                          "settlement": settlement_v1}

# Each service's own reason codes of IntakeRejected, with their meaning (besides
# common.PLATFORM_REJECTION_REASONS); published, never an enum in the schema.
REJECTION_REASONS_BY_SERVICE: dict[str, dict[str, str]] = {
    "lab": lab_rejections.REASONS,
    "diagnosis": diagnosis_rejections.REASONS,
    "referral": referral_rejections.REASONS,
    "settlement": settlement_rejections.REASONS,
}

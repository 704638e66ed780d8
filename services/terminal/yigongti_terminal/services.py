"""Which services the terminal can talk to: a service's commands work once its
contract is in yigongti_contracts (registry.SERVICE_MODULES, drafts included)
and the terminal has its address; otherwise they say it is not available."""

from __future__ import annotations

from types import ModuleType

from yigongti_contracts.registry import SERVICE_MODULES

ALL = ("lab", "diagnosis", "referral", "settlement")
# The field of each service's feed items that names the aggregate (its key).
AGGREGATE_FIELD = {"lab": "order_id", "diagnosis": "request_id", "referral": "referral_id",
                   "settlement": "settlement_id"}


class ServiceNotAvailable(Exception):
    def __init__(self, service: str, why: str) -> None:
        super().__init__(f"{service}: {why}")
        self.service = service
        self.why = why


def contract(service: str) -> ModuleType:
    module = SERVICE_MODULES.get(service)
    if module is None:
        raise ServiceNotAvailable(service, "its contract is not published yet")
    return module


def has_contract(service: str) -> bool:
    return service in SERVICE_MODULES

"""Return-to-poverty monitoring (因病致贫返贫监测), domain-rules.md §3.

A person whose out-of-pocket for the year reaches the warning threshold (a
share of last year's rural per-capita disposable income: 50 % for the
formerly poor, 100 % for others; policy/benefits-*.yaml `poverty_watch`)
raises `HighOutOfPocketAlert` once, when a settlement crosses it. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .benefits import AssistanceCategory, PolicyTable


@dataclass(frozen=True)
class HighOutOfPocket:
    """What the alert to the insurance office carries (codes and figures only)."""

    policy_version: str
    formerly_poor: bool
    threshold: Decimal
    share_of_rural_income: Decimal
    rural_income: Decimal
    out_of_pocket: Decimal  # the year's, after the settlement that crossed


def is_formerly_poor(policy: PolicyTable, category: AssistanceCategory,
                     marked_formerly_poor: bool = False) -> bool:
    """Watched at the lower threshold: marked 脱贫人口 at enrolment, or in a category
    the table treats as formerly poor."""
    return marked_formerly_poor or category in policy.poverty_watch.formerly_poor_categories


def warning_threshold(policy: PolicyTable, formerly_poor: bool) -> Decimal:
    watch = policy.poverty_watch
    return watch.formerly_poor_threshold if formerly_poor else watch.others_threshold


def high_out_of_pocket(policy: PolicyTable, formerly_poor: bool, before: Decimal,
                       after: Decimal) -> HighOutOfPocket | None:
    """The alert when the year's out-of-pocket goes from below the threshold to at
    or above it; None otherwise (already above, still below, or going down)."""
    threshold = warning_threshold(policy, formerly_poor)
    if not before < threshold <= after:
        return None
    watch = policy.poverty_watch
    return HighOutOfPocket(
        policy_version=policy.version,
        formerly_poor=formerly_poor,
        threshold=threshold,
        share_of_rural_income=watch.formerly_poor_share if formerly_poor else watch.others_share,
        rural_income=watch.rural_income,
        out_of_pocket=after,
    )

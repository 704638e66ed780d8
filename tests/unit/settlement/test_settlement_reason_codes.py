"""The settlement refuses with documented codes only: every Refused("…") in its
source is a platform reason or one of contracts' settlement REASONS."""

import re
from pathlib import Path

from yigongti_contracts.common import PLATFORM_REJECTION_REASONS
from yigongti_contracts.settlement.codes import IdentityRejectionReason
from yigongti_contracts.settlement.rejections import REASONS

SOURCE = Path(__file__).resolve().parents[3] / "services" / "settlement" / "yigongti_settlement"


def test_every_refusal_code_is_documented():
    codes = set()
    for path in SOURCE.glob("*.py"):
        codes |= set(re.findall(r'Refused\("([a-z_]+)"', path.read_text()))
    # SettlementRejected's reasons (handlers.py: a refused bill)
    codes |= set(re.findall(r'"(deceased|audit_refused)"', (SOURCE / "handlers.py").read_text()))
    assert codes, "no refusal found: the pattern is stale"
    undocumented = codes - set(REASONS) - PLATFORM_REJECTION_REASONS
    assert not undocumented


def test_identity_refusals_are_an_enum_of_the_contract():
    assert {"stale", "replayed", "unknown_terminal", "revoked_terminal", "bad_signature",
            "face_mismatch", "low_liveness"} <= {r.value for r in IdentityRejectionReason}

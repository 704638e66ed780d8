"""The inbox speaks plain words for every event a service publishes, and lists the
critical items still waiting for acknowledgement with their time left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from yigongti_contracts.registry import EVENTS_BY_OWNER
from yigongti_terminal.inbox import WORDS, merged, open_criticals

PUBLISHED = sorted({m.CE_TYPE for models in EVENTS_BY_OWNER.values() for m in models})


@pytest.mark.parametrize("ce_type", PUBLISHED)
def test_every_published_event_has_plain_words(ce_type):
    assert ce_type in WORDS, f"no inbox words for {ce_type}"


def _item(seq, ce_type, data, minutes_ago=0, service="lab"):
    at = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()
    return {"service": service, "seq": seq, "type": ce_type, "aggregate": "O-1", "time": at,
            "data": data}


def test_open_criticals_with_time_left_and_acknowledged_ones_gone():
    now = datetime.now(UTC)
    raised = "yigongti.lab.critical_value.raised.v1"
    items = merged([
        _item(1, raised, {"critical_id": "CV-1", "test_code": "K", "value": "6.80",
                          "unit": "mmol/L", "escalate_at": (now + timedelta(minutes=9))
                          .isoformat()}, 6),
        _item(2, raised, {"critical_id": "CV-2", "test_code": "K", "value": "2.1",
                          "unit": "mmol/L", "escalate_at": (now - timedelta(minutes=3))
                          .isoformat()}, 18),
        _item(3, raised, {"critical_id": "CV-3", "test_code": "K", "value": "7.0",
                          "unit": "mmol/L", "escalate_at": now.isoformat()}, 2),
        _item(4, "yigongti.lab.critical_value.acknowledged.v1", {"critical_id": "CV-3"}),
        _item(5, "yigongti.intake.rejected.v1", {"reason": "wrong_tube"}),
    ])
    found = {c.number: c for c in open_criticals(items, now)}
    assert set(found) == {"CV-1", "CV-2"}
    assert found["CV-1"].time_left.startswith(("8 min", "9 min"))
    assert found["CV-2"].time_left.startswith("OVERDUE")
    assert "K 6.80 mmol/L" in found["CV-1"].what
    refused = next(i for i in items if i["seq"] == 5)
    assert refused["what"].startswith("REFUSED:") and refused["what"].endswith("[wrong_tube]")

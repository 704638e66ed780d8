"""The face platform's sandbox: cosine similarity against a threshold kept as
data, a liveness score, a signed result any holder of its public key checks."""

from datetime import UTC, datetime, timedelta

from yigongti_contracts.settlement import credentials
from yigongti_deploy.face_sandbox import THRESHOLDS, FaceSandbox, cosine


def test_the_enrolled_face_matches_and_another_does_not():
    s = FaceSandbox()
    s.enrol("E1", [1.0, 0.0, 0.5])
    ok = s.compare("E1", [0.9, 0.05, 0.5], 0.95, "t1")
    other = s.compare("E1", [-1.0, 1.0, 0.0], 0.95, "t1")
    unknown = s.compare("E9", [1.0, 0.0, 0.5], 0.95, "t1")
    assert ok["payload"]["matched"] and not other["payload"]["matched"]
    assert not unknown["payload"]["matched"]
    assert credentials.verify(ok, s.key.public_key())
    assert not credentials.verify(ok, FaceSandbox().key.public_key())


def test_liveness_and_thresholds_are_data():
    s = FaceSandbox(thresholds={"similarity": 0.99, "liveness": 0.5})
    s.enrol("E1", [1.0, 0.0])
    assert s.compare("E1", [1.0, 0.0], 0.6, "t")["payload"]["liveness_passed"]
    assert not FaceSandbox().compare("E1", [1.0, 0.0], 0.6, "t")["payload"]["liveness_passed"]
    assert set(THRESHOLDS) == {"similarity", "liveness"}
    assert round(cosine([1.0, 0.0], [0.0, 1.0]), 6) == 0.0


def test_a_result_is_fresh_for_60_seconds_and_tampering_breaks_it():
    s = FaceSandbox()
    now = datetime.now(UTC)
    r = s.compare("E1", [1.0], 0.9, "t", issued_at=now - timedelta(seconds=59))
    assert credentials.fresh(r["payload"], now)
    assert not credentials.fresh(r["payload"], now + timedelta(seconds=2))
    r["payload"]["matched"] = True
    assert not credentials.verify(r, s.key.public_key())
    assert "image" not in r["payload"] and "template" not in r["payload"]

"""A queued event is signed when it is sent: a fresh ce_time, a new nonce, the
ce_id and value bytes of capture; the service's own verifier takes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from yigongti_kit.intake_auth import TerminalSigner, verify_record
from yigongti_terminal.queue import Queue
from yigongti_terminal.sender import signed_headers


def _h(headers, name):
    return dict(headers)[name].decode()


def test_signed_at_send_with_the_capture_s_id_and_bytes(tmp_path):
    signer = TerminalSigner.generate("t-sign-1")
    queue = Queue(tmp_path / "q.sqlite")
    item = queue.capture(service="lab", ce_type="yigongti.lab.order.placed.v1", key="O-1",
                         value=b'{"order_id":"O-1"}', aggregate="O-1")
    later = datetime.now(UTC) + timedelta(hours=2)  # the link came back two hours later
    first = signed_headers(signer, item, now=later)
    second = signed_headers(signer, item, now=later)
    assert _h(first, "ce_id") == _h(second, "ce_id") == item.ce_id
    assert _h(first, "x-nonce") != _h(second, "x-nonce")  # a new nonce for every send
    assert _h(first, "ce_time").startswith(later.strftime("%Y-%m-%dT%H:%M"))
    assert _h(first, "ce_subject") == "O-1"
    assert verify_record(first, item.value, signer.public_key_b64, received_at=later,
                         max_skew_s=300) is None
    # Signed at capture instead, it would be stale when it arrives.
    early = signed_headers(signer, item, now=later - timedelta(hours=2))
    assert verify_record(early, item.value, signer.public_key_b64, received_at=later,
                         max_skew_s=300) == "stale_timestamp"

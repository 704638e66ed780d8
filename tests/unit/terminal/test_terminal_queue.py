"""The store-and-forward queue on disk: order, once, unsigned, known patients."""

from yigongti_terminal.queue import Queue


def test_waiting_in_capture_order_and_sent_ones_leave(tmp_path):
    q = Queue(tmp_path / "q.sqlite")
    a = q.capture(service="lab", ce_type="t", key="O-1", value=b"{}", aggregate="O-1")
    b = q.capture(service="lab", ce_type="t", key="O-1", value=b"{\"x\":1}", aggregate="O-1")
    assert [i.ce_id for i in q.waiting()] == [a.ce_id, b.ce_id]
    q.mark_failed(a.seq, "KafkaConnectionError")
    assert q.waiting()[0].attempts == 1 and q.waiting()[0].last_error == "KafkaConnectionError"
    q.mark_sent(a.seq)
    assert [i.ce_id for i in q.waiting()] == [b.ce_id] and q.sent(a.ce_id)
    q.close()
    again = Queue(tmp_path / "q.sqlite")  # kept across a restart of the terminal
    assert [i.value for i in again.waiting()] == [b"{\"x\":1}"]


def test_known_patients(tmp_path):
    q = Queue(tmp_path / "q.sqlite")
    ref = "v1:" + "ab" * 32
    assert not q.knows(ref)
    q.remember(ref)
    q.remember(ref)
    assert q.knows(ref)


def test_feed_items_and_cursor(tmp_path):
    q = Queue(tmp_path / "q.sqlite")
    items = [{"seq": 3, "id": "e", "type": "x", "order_id": "O-1", "time": "2026-01-01T00:00:00",
              "data": {"order_id": "O-1"}}]
    q.store_feed("lab", items, "order_id", 3)
    q.store_feed("lab", items, "order_id", 3)  # read twice, kept once
    assert q.cursor("lab") == 3 and q.cursor("diagnosis") == 0
    assert [i["aggregate"] for i in q.feed_items("lab")] == ["O-1"]

-- The relay polls instead of being notified (outbox.py). A transaction that
-- sends NOTIFY takes a lock shared by the whole cluster at commit and holds it
-- through its WAL flush: every writing transaction committed alone, one fsync
-- each, and under load commits queued on that lock ("Lock: object").
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();

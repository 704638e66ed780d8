-- An outbox row the broker refuses for good (too large, malformed) is set
-- aside with the error instead of being offered again and again: one such row
-- used to stop the relay, and with it every event after it.
ALTER TABLE outbox ADD COLUMN refused_at timestamptz, ADD COLUMN refused_error text;

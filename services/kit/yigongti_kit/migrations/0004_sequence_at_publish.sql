-- ce_sequence is numbered by the relay as it publishes (outbox.py), not by the
-- writer: a counter row per aggregate taken in every writing transaction made
-- concurrent transactions on one aggregate (two tubes of an order resulted on
-- two partitions, two technologists) wait for each other until commit.
ALTER TABLE outbox ALTER COLUMN sequence DROP NOT NULL;

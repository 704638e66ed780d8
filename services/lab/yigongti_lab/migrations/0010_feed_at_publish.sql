-- The clinic feed is filled when the relay marks an event sent, not when the
-- event is written. A feed row written by the writer's transaction took its
-- seq when inserted and became visible when that transaction committed, so
-- rows became visible out of seq order (six partitions and the staff's HTTP
-- calls commit side by side), and a clinic reading with the cursor "after"
-- could pass over a row that committed late: a critical value it never saw.
-- The relay is one connection committing one batch after another, so feed
-- rows now become visible in seq order, and only once the event is published.

DROP TRIGGER outbox_to_clinic_feed ON outbox;

CREATE TRIGGER outbox_to_clinic_feed AFTER UPDATE OF sent_at ON outbox
    FOR EACH ROW WHEN (OLD.sent_at IS NULL AND NEW.sent_at IS NOT NULL)
    EXECUTE FUNCTION feed_from_outbox();

-- The institution-scoped feed every service offers its clinics (DESIGN §6:
-- clinics read their own events through a feed, never a county-wide topic).
-- Filled when the relay marks an event sent: the relay is one connection
-- committing one batch after another, so feed rows become visible in seq
-- order and a reader by cursor never passes over a row that commits late.
-- While the broker is down the feed waits with the events topic.
--
-- Which institutions see an event, and what they see, is the service's rule:
-- its migrations replace feed_route(), which returns one row per institution
-- (an event can concern two: a referral's sender and receiver). The default
-- routes nothing.

CREATE TABLE feed (
    seq            bigserial PRIMARY KEY,
    institution_id text NOT NULL,
    ce_id          uuid NOT NULL,
    type           text NOT NULL,
    aggregate_id   text NOT NULL,
    payload        jsonb NOT NULL,
    created_at     timestamptz NOT NULL
);
CREATE INDEX feed_institution ON feed (institution_id, seq);

CREATE FUNCTION feed_route(event outbox)
    RETURNS TABLE (institution_id text, type text, payload jsonb)
    LANGUAGE sql STABLE AS $$ SELECT NULL::text, NULL::text, NULL::jsonb WHERE false $$;

CREATE FUNCTION feed_from_sent_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO feed (institution_id, ce_id, type, aggregate_id, payload, created_at)
    SELECT r.institution_id, NEW.id, coalesce(r.type, NEW.type), NEW.aggregateid,
           coalesce(r.payload, NEW.payload), NEW.created_at
    FROM feed_route(NEW) r
    WHERE r.institution_id IS NOT NULL;
    RETURN NEW;
END $$;

CREATE TRIGGER outbox_to_feed AFTER UPDATE OF sent_at ON outbox
    FOR EACH ROW WHEN (OLD.sent_at IS NULL AND NEW.sent_at IS NOT NULL)
    EXECUTE FUNCTION feed_from_sent_outbox();

-- An intake rejection goes to the institution of the verified sending terminal
-- (a sender that is not verified gets no answer at all: consumer.py); services
-- call this from their feed_route.
CREATE FUNCTION feed_sender_institution(event outbox) RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT institution_id FROM terminals
     WHERE event.type = 'yigongti.intake.rejected.v1'
       AND '/terminals/' || terminal_id = event.payload->>'sender' $$;

-- The clinic's feed (DESIGN §6: clinics read their own results through an
-- institution-scoped feed, never a county-wide topic). Filled by a trigger on
-- the outbox, so every event the lab publishes about an institution's orders
-- lands in that institution's feed in the same transaction, whoever wrote it
-- (the lab's handlers, its HTTP staff actions, or the kit's intake rejections).

CREATE TABLE clinic_feed (
    seq            bigserial PRIMARY KEY,
    institution_id text NOT NULL,
    ce_id          uuid NOT NULL,
    type           text NOT NULL,
    order_id       text NOT NULL,
    payload        jsonb NOT NULL,
    created_at     timestamptz NOT NULL
);
CREATE INDEX clinic_feed_institution ON clinic_feed (institution_id, seq);

CREATE FUNCTION feed_from_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    inst text;
BEGIN
    inst := coalesce(
        NEW.payload->>'ordering_institution',
        (SELECT ordering_institution FROM orders WHERE order_id = NEW.aggregateid),
        -- an intake rejection: the institution of the (verified) sending terminal
        (SELECT institution_id FROM terminals
          WHERE '/terminals/' || terminal_id = NEW.payload->>'sender'));
    IF inst IS NOT NULL THEN
        INSERT INTO clinic_feed (institution_id, ce_id, type, order_id, payload, created_at)
        VALUES (inst, NEW.id, NEW.type, NEW.aggregateid, NEW.payload, NEW.created_at);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER outbox_to_clinic_feed AFTER INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION feed_from_outbox();

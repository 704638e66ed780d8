-- An intake rejection belongs in the feed of the institution whose terminal
-- sent the refused record, and only there. 0003 looked at the order named by
-- the record's key first, so a record another clinic (or the lab's LIS) sent
-- about someone else's order — e.g. a critical-value ack refused as
-- forbidden_institution — landed in the order's clinic's feed, and the sender
-- never saw its answer. A rejection whose sender is no registered terminal
-- goes to no feed (nothing proves who sent it).

CREATE OR REPLACE FUNCTION feed_from_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    inst text;
BEGIN
    IF NEW.type = 'yigongti.intake.rejected.v1' THEN
        inst := (SELECT institution_id FROM terminals
                  WHERE '/terminals/' || terminal_id = NEW.payload->>'sender');
    ELSE
        inst := coalesce(
            NEW.payload->>'ordering_institution',
            (SELECT ordering_institution FROM orders WHERE order_id = NEW.aggregateid));
    END IF;
    IF inst IS NOT NULL THEN
        INSERT INTO clinic_feed (institution_id, ce_id, type, order_id, payload, created_at)
        VALUES (inst, NEW.id, NEW.type, NEW.aggregateid, NEW.payload, NEW.created_at);
    END IF;
    RETURN NEW;
END $$;

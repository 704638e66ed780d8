-- The clinic sees results once a physician has verified them (the national
-- rules release verified reports; issue 8 item 17). Until then its feed shows
-- only that the tube is being tested: a LabResultsReported becomes an item of
-- type yigongti.lab.specimen.in_testing.v1 carrying the order, the tube and
-- the time, no values; a LabResultsConfirmed (a step inside the lab) is not
-- in the feed. The values reach the clinic with LabReportVerified (and
-- LabReportAmended). A critical value still goes out when the technologist
-- confirms it (CriticalValueRaised carries its value). The events topic, read
-- by the lab's own staff systems, keeps the preliminary values.

CREATE OR REPLACE FUNCTION feed_from_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    inst text;
    kind text := NEW.type;
    body jsonb := NEW.payload;
BEGIN
    IF NEW.type = 'yigongti.lab.results.confirmed.v1' THEN
        RETURN NEW;
    ELSIF NEW.type = 'yigongti.lab.results.reported.v1' THEN
        kind := 'yigongti.lab.specimen.in_testing.v1';
        body := jsonb_build_object('order_id', NEW.payload->'order_id',
                                   'barcode', NEW.payload->'barcode',
                                   'at', NEW.payload->'reported_at');
    END IF;
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
        VALUES (inst, NEW.id, kind, NEW.aggregateid, body, NEW.created_at);
    END IF;
    RETURN NEW;
END $$;

-- What the feed already holds is brought under the same rule.
DELETE FROM clinic_feed WHERE type = 'yigongti.lab.results.confirmed.v1';
UPDATE clinic_feed
   SET type = 'yigongti.lab.specimen.in_testing.v1',
       payload = jsonb_build_object('order_id', payload->'order_id',
                                    'barcode', payload->'barcode',
                                    'at', payload->'reported_at')
 WHERE type = 'yigongti.lab.results.reported.v1';

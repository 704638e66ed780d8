-- A suggestion is recorded (for the finding → suggestion figures) by the
-- database as its event enters the outbox, not by a statement of its own:
-- the suggestion path is timed at 200 findings/s, and each round trip from
-- the service is about a quarter of its cost. The same finding delivered
-- again under another id (its suggestion_id is derived from the finding)
-- keeps its first row, and its event is not written again.
CREATE FUNCTION suggestion_from_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO suggestions (suggestion_id, patient_ref, from_institution, to_institution,
                             finding, finding_raised_at, suggested_at)
    VALUES (NEW.payload->>'suggestion_id', NEW.payload->>'patient_ref',
            NEW.payload->>'from_institution', NEW.payload->>'to_institution',
            NEW.payload->>'finding', (NEW.payload->>'finding_raised_at')::timestamptz,
            (NEW.payload->>'suggested_at')::timestamptz)
    ON CONFLICT (suggestion_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;  -- suggested already: not published twice
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER outbox_suggestions BEFORE INSERT ON outbox
    FOR EACH ROW WHEN (NEW.type = 'yigongti.referral.suggested.v1')
    EXECUTE FUNCTION suggestion_from_outbox();

-- Wake the relay once per statement that writes the outbox, from inside the
-- server: writers no longer send their own pg_notify (a round trip per event).
-- PostgreSQL folds identical notifications of one transaction into one.
CREATE FUNCTION outbox_notify() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_outbox', '');
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

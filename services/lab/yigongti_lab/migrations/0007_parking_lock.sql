-- Release of parked records, serialised with parking (parking.py): whoever
-- makes a prerequisite exist and whoever parks a record waiting for it take
-- the same transaction lock on (kind, key), so a record parked while the
-- prerequisite's transaction is still open is never left behind. The DELETE
-- runs after the lock is granted, so it sees records parked meanwhile.
CREATE FUNCTION release_parked(p_kind text, p_key text) RETURNS SETOF parked
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_kind || chr(31) || p_key, 0));
    RETURN QUERY
        DELETE FROM parked WHERE waiting_kind = p_kind AND waiting_key = p_key
          AND expired_at IS NULL
        RETURNING *;
END $$;

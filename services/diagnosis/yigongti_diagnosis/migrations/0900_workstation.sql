-- The diagnostician's workstation (workstation/): sessions in the database so
-- that any replica serves any page (no sticky sessions), and the audit of who
-- viewed which study. Numbered apart from the service's own migrations.

-- A signed-in browser. Only the SHA-256 of the cookie's token is kept; the
-- CSRF token is the session's. Ended sessions are kept (ended_at) so that a
-- cookie reused after sign-out is refused as ended, not as unknown.
CREATE TABLE ws_sessions (
    token_hash   text PRIMARY KEY,
    user_id      text NOT NULL,
    institution  text NOT NULL,
    roles        text[] NOT NULL,
    csrf         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT db_now(),
    last_seen_at timestamptz NOT NULL DEFAULT db_now(),
    ended_at     timestamptz,
    end_reason   text
);

-- Who viewed which study (and its previews), when.
CREATE TABLE ws_audit (
    id          bigserial PRIMARY KEY,
    user_id     text NOT NULL,
    institution text NOT NULL,
    request_id  text NOT NULL,
    action      text NOT NULL,
    at          timestamptz NOT NULL DEFAULT db_now()
);
CREATE INDEX ws_audit_request ON ws_audit (request_id, at);

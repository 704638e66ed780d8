-- Signed intake (yigongti_kit.intake_auth): the registry of terminal keys and
-- the nonces already seen. Created in the service's schema (search_path).

-- Registered clinic terminals, upserted from TERMINALS_FILE at start.
CREATE TABLE terminals (
    terminal_id    text PRIMARY KEY,
    institution_id text NOT NULL,
    public_key     text NOT NULL,               -- Ed25519: base64 of the raw 32 bytes, or PEM
    active         boolean NOT NULL DEFAULT true
);

-- One row per (terminal, nonce) accepted; a second one is a replay. Rows older
-- than twice INTAKE_MAX_SKEW_S are pruned (they cannot pass the time check again).
CREATE TABLE intake_nonces (
    terminal_id text NOT NULL,
    nonce       text NOT NULL,
    signed_at   timestamptz NOT NULL,
    PRIMARY KEY (terminal_id, nonce)
);
CREATE INDEX intake_nonces_signed_at ON intake_nonces (signed_at);

-- The settlement service's state (issue 13). The national ID exists here only
-- encrypted (AES-256-GCM, NATIONAL_ID_KEY_FILE); look-ups go by patient_ref,
-- the keyed HMAC of the normalised ID (contracts/patient_ref.py). No face
-- image, template or feature ever reaches this database; an authNo is kept
-- only as its SHA-256 (replay check), a settlement token only as its SHA-256.

CREATE TABLE persons (
    person_id      bigserial PRIMARY KEY,
    national_id_ct bytea NOT NULL,          -- nonce || AES-GCM ciphertext
    ec_index_no    text UNIQUE,             -- the voucher / face platform's opaque index
    card_sn_hash   text,                    -- SHA-256 of the card's serial (card credential)
    sex            text NOT NULL,
    scheme         text NOT NULL,           -- resident | employee
    assistance     text NOT NULL,           -- none | low_income | ...
    formerly_poor  boolean NOT NULL DEFAULT false,
    died_on        date,
    region         text NOT NULL,
    enrolled_at    timestamptz NOT NULL DEFAULT db_now()
);

-- Every ref a person has had, one per key version: an old ref still resolves.
CREATE TABLE person_refs (
    patient_ref text PRIMARY KEY,
    person_id   bigint NOT NULL REFERENCES persons,
    key_version text NOT NULL,
    UNIQUE (person_id, key_version)
);

-- Each look-up by ID number: terminal and visit, never the ID.
CREATE TABLE lookups (
    id          bigserial PRIMARY KEY,
    terminal_id text NOT NULL,
    institution text NOT NULL,
    visit_id    text NOT NULL,
    found       boolean NOT NULL,
    at          timestamptz NOT NULL DEFAULT db_now()
);
CREATE INDEX lookups_terminal ON lookups (terminal_id, at);

-- Identity checks, keyed <institution>:<outBizNo>; the answer is kept so a
-- retried request gets the same one.
CREATE TABLE identities (
    identity_id     text PRIMARY KEY,
    institution     text NOT NULL,
    visit_id        text NOT NULL,
    terminal_id     text,
    credential_type text NOT NULL,
    request_digest  text NOT NULL,
    person_id       bigint REFERENCES persons,
    patient_ref     text,
    status          text NOT NULL,          -- verified | rejected
    reason          text,
    token_nonce     text,                   -- the token is HMAC(key, id || nonce), never stored
    token_expires_at timestamptz,
    verified_at     timestamptz NOT NULL DEFAULT db_now()
);

CREATE TABLE used_credentials (
    credential_hash text PRIMARY KEY,       -- SHA-256 of an authNo or voucher number
    identity_id     text NOT NULL,
    used_at         timestamptz NOT NULL DEFAULT db_now()
);

CREATE TABLE tokens (
    token_hash  text PRIMARY KEY,
    identity_id text NOT NULL REFERENCES identities,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

-- Charges posted to a visit by the lab and diagnosis services.
CREATE TABLE visit_charges (
    source       text NOT NULL,             -- lab | diagnosis
    charge_id    text NOT NULL,
    visit_id     text NOT NULL,
    patient_ref  text NOT NULL,
    institution  text NOT NULL,
    item_code    text NOT NULL,
    category     text NOT NULL,
    quantity     integer NOT NULL,
    unit_price   numeric(12, 2) NOT NULL,
    amount       numeric(12, 2) NOT NULL,
    posted_at    timestamptz NOT NULL,
    reversed_at  timestamptz,
    settled_in   text,                      -- the settlement that paid it
    PRIMARY KEY (source, charge_id)
);
CREATE INDEX visit_charges_visit ON visit_charges (visit_id);

CREATE TABLE settlements (
    settlement_id   text PRIMARY KEY,
    out_biz_no      text NOT NULL,
    institution     text NOT NULL,
    visit_id        text NOT NULL,
    identity_id     text NOT NULL,
    person_id       bigint REFERENCES persons,
    patient_ref     text,
    request_digest  text NOT NULL,
    status          text NOT NULL,          -- completed | rejected | reversed
    reason          text,
    year            integer,
    inputs          jsonb,                  -- payers.request_to_json: recomputable
    policy_version  text,
    breakdown       jsonb,
    answer          jsonb NOT NULL,         -- what the counter was answered
    supplementary_of text,
    settled_at      timestamptz NOT NULL DEFAULT db_now(),
    reversed_at     timestamptz,
    seq             bigserial UNIQUE        -- reversal goes latest first
);
CREATE INDEX settlements_person ON settlements (person_id, year, seq);
CREATE INDEX settlements_visit ON settlements (visit_id);

CREATE TABLE accumulators (
    person_id bigint NOT NULL REFERENCES persons,
    year      integer NOT NULL,
    figures   jsonb NOT NULL,               -- payers.Accumulators as strings
    PRIMARY KEY (person_id, year)
);

CREATE TABLE stay_deductibles (
    visit_id  text PRIMARY KEY,
    used      numeric(12, 2) NOT NULL
);

-- What the history rules read: items settled, stays.
CREATE TABLE settled_items (
    person_id     bigint NOT NULL,
    settlement_id text NOT NULL,
    item_code     text NOT NULL,
    service_date  date NOT NULL,
    quantity      integer NOT NULL
);
CREATE INDEX settled_items_person ON settled_items (person_id, service_date);

CREATE TABLE stays (
    person_id     bigint NOT NULL,
    visit_id      text NOT NULL,
    institution   text NOT NULL,
    admitted_on   date NOT NULL,
    discharged_on date NOT NULL,
    settlement_id text NOT NULL
);
CREATE INDEX stays_person ON stays (person_id);

CREATE TABLE audit_flags (
    flag_id        text PRIMARY KEY,
    settlement_id  text NOT NULL,
    patient_ref    text NOT NULL,
    institution    text NOT NULL,
    rule_id        text NOT NULL,
    grade          text NOT NULL,
    stage          text NOT NULL,
    evidence       jsonb NOT NULL,
    to_review      boolean NOT NULL,
    raised_at      timestamptz NOT NULL DEFAULT db_now(),
    decision       text,
    decision_reason text,
    decided_by     text,
    decided_at     timestamptz
);

CREATE TABLE alerts (
    settlement_id text PRIMARY KEY,
    patient_ref   text NOT NULL,
    threshold     numeric(12, 2) NOT NULL,
    out_of_pocket numeric(12, 2) NOT NULL,
    formerly_poor boolean NOT NULL,
    raised_at     timestamptz NOT NULL DEFAULT db_now()
);

CREATE TABLE safety_net_grants (
    settlement_id text NOT NULL,
    amount        numeric(12, 2) NOT NULL,
    granted_by    text NOT NULL,
    granted_at    timestamptz NOT NULL DEFAULT db_now()
);

-- The clinic feed: an event goes to the institution it names; audit flags,
-- decisions, alerts and grants are the insurance office's (its own routes).
CREATE OR REPLACE FUNCTION feed_route(event outbox)
    RETURNS TABLE (institution_id text, type text, payload jsonb)
    LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN event.type = 'yigongti.intake.rejected.v1'
                THEN feed_sender_institution(event)
                ELSE event.payload->>'institution' END,
           NULL::text, NULL::jsonb
    WHERE event.type IN ('yigongti.intake.rejected.v1',
                         'yigongti.settlement.identity.verified.v1',
                         'yigongti.settlement.identity.rejected.v1',
                         'yigongti.settlement.settlement.completed.v1',
                         'yigongti.settlement.settlement.rejected.v1',
                         'yigongti.settlement.settlement.reversed.v1') $$;

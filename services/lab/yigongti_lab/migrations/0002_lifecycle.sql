-- Specimens through transport and receipt; records parked until what they
-- depend on arrives.

ALTER TABLE specimens
    ADD COLUMN shipment_id     text,
    ADD COLUMN courier_id      text,
    ADD COLUMN logger_id       text,
    ADD COLUMN dispatched_at   timestamptz,
    ADD COLUMN stable_until    timestamptz,
    ADD COLUMN received_at     timestamptz,
    ADD COLUMN received_by     text,
    ADD COLUMN inspection      jsonb,
    ADD COLUMN logger          jsonb,
    ADD COLUMN rejection_reasons text[];

ALTER TABLE order_tests
    ADD COLUMN cancel_reason text,
    ADD COLUMN cancelled_at  timestamptz;

-- A record that arrived before its prerequisite (DESIGN §5): kept, applied
-- when the prerequisite arrives, refused only after its grace period.
CREATE TABLE parked (
    id            bigserial PRIMARY KEY,
    waiting_kind  text NOT NULL,     -- order | specimen | received
    waiting_key   text NOT NULL,
    ce_id         text NOT NULL,
    ce_type       text NOT NULL,
    ce_source     text NOT NULL,
    answer_key    text NOT NULL,     -- where an IntakeRejected would be keyed
    sender_institution text,
    payload       jsonb NOT NULL,
    parked_at     timestamptz NOT NULL DEFAULT db_now(),
    expired_at    timestamptz        -- past grace: refused, but kept (results are never discarded)
);
CREATE INDEX parked_waiting ON parked (waiting_kind, waiting_key) WHERE expired_at IS NULL;

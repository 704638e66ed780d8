-- Dead letters leave through the relay, like events: the copy is written in
-- the transaction that answers the record, so a batch that is rolled back and
-- read again writes none, and there is one copy per source coordinates (a relay
-- crash before its "sent" mark can still publish a copy twice).
CREATE TABLE dead_letters (
    seq              bigserial PRIMARY KEY,
    source_topic     text NOT NULL,
    source_partition integer NOT NULL,
    source_offset    bigint NOT NULL,
    dlq_topic        text NOT NULL,
    record_key       bytea,
    record_value     bytea,                 -- cut to the copy limit; see value_bytes
    value_bytes      integer NOT NULL,      -- the original value's size
    headers          jsonb NOT NULL,        -- [[name, base64 value or null], …] as received
    record_timestamp bigint,                -- the original's Kafka timestamp (ms)
    error            text NOT NULL,         -- a code, never a value
    detail           text NOT NULL,
    consumer         text NOT NULL,         -- which of the service's consumers
    seen_at          timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    refused_at       timestamptz,
    refused_error    text,
    replayed_at      timestamptz,           -- yigongti-dlq replay: when, and what came of it
    replay_outcome   text,
    UNIQUE (source_topic, source_partition, source_offset)
);
CREATE INDEX dead_letters_unsent ON dead_letters (seq) WHERE sent_at IS NULL AND refused_at IS NULL;

-- Events of other services this one reads but could not apply (yet): parked
-- until a prerequisite exists, or unapplied with a reason code. The record is
-- kept whole, so `yigongti-events reapply` runs it through the same path again
-- once the cause is fixed. One row per source coordinates.
CREATE TABLE held_events (
    id               bigserial PRIMARY KEY,
    subscription     text NOT NULL,         -- the owner service whose topic it came from
    topic            text NOT NULL,
    kafka_partition  integer NOT NULL,
    kafka_offset     bigint NOT NULL,
    record_key       bytea,
    record_value     bytea,
    headers          jsonb NOT NULL,
    record_timestamp bigint,
    ce_source        text,
    ce_id            text,
    ce_type          text,
    status           text NOT NULL CHECK (status IN ('parked', 'unapplied', 'reapplied')),
    reason           text NOT NULL,         -- a code: waiting, foreign_source, schema_violation, …
    fields           jsonb NOT NULL DEFAULT '[]'::jsonb,
    waiting_kind     text,
    waiting_key      text,
    held_at          timestamptz NOT NULL DEFAULT now(),
    settled_at       timestamptz,
    UNIQUE (topic, kafka_partition, kafka_offset)
);
CREATE INDEX held_events_waiting ON held_events (waiting_kind, waiting_key) WHERE status = 'parked';
CREATE INDEX held_events_unapplied ON held_events (id) WHERE status = 'unapplied';

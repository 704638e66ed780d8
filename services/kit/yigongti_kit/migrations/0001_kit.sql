-- The kit's tables, created in the owning service's schema (search_path).

-- Transactional outbox, shaped like Debezium's outbox event router
-- (id, aggregatetype, aggregateid, type, payload) so a CDC relay could
-- replace the polling relay without a migration.
CREATE TABLE outbox (
    seq           bigserial PRIMARY KEY,          -- publish order
    id            uuid NOT NULL UNIQUE,           -- ce_id, fixed at write
    aggregatetype text NOT NULL,
    aggregateid   text NOT NULL,                  -- Kafka key
    type          text NOT NULL,                  -- ce_type
    payload       jsonb NOT NULL,
    topic         text NOT NULL,
    source        text NOT NULL,                  -- ce_source
    subject       text,
    sequence      bigint NOT NULL,                -- ce_sequence per aggregate
    traceparent   text,
    tracestate    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Per-aggregate counter behind ce_sequence; survives pruning of the outbox.
CREATE TABLE outbox_sequence (
    aggregatetype text NOT NULL,
    aggregateid   text NOT NULL,
    last          bigint NOT NULL,
    PRIMARY KEY (aggregatetype, aggregateid)
);

-- Idempotent consumption: one row per event handled, in the handler's transaction.
CREATE TABLE processed_events (
    ce_source    text NOT NULL,
    ce_id        text NOT NULL,
    payload_hash text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ce_source, ce_id)
);
CREATE INDEX processed_events_at ON processed_events (processed_at);

-- The same (ce_source, ce_id) seen with another payload: flagged, never applied.
CREATE TABLE inbox_conflicts (
    id           bigserial PRIMARY KEY,
    ce_source    text NOT NULL,
    ce_id        text NOT NULL,
    ce_type      text,
    first_hash   text NOT NULL,
    other_hash   text NOT NULL,
    topic        text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    seen_at      timestamptz NOT NULL DEFAULT now()
);

-- The database clock. Tests move time by setting clock_offset; every timer
-- and deadline reads db_now(), never the application's clock.
CREATE TABLE clock_offset (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    shift    interval NOT NULL
);
CREATE FUNCTION db_now() RETURNS timestamptz
    LANGUAGE sql STABLE
    AS $$ SELECT now() + coalesce((SELECT shift FROM clock_offset), interval '0') $$;

-- Durable timers fired by a poller (FOR UPDATE SKIP LOCKED).
CREATE TABLE timers (
    id        bigserial PRIMARY KEY,
    kind      text NOT NULL,
    key       text NOT NULL,
    due_at    timestamptz NOT NULL,
    payload   jsonb NOT NULL DEFAULT '{}'::jsonb,
    traceparent text,
    tracestate  text,
    fired_at  timestamptz,
    cancelled_at timestamptz,
    attempts  integer NOT NULL DEFAULT 0,
    last_error text,
    UNIQUE (kind, key)
);
CREATE INDEX timers_due ON timers (due_at) WHERE fired_at IS NULL AND cancelled_at IS NULL;

-- Intake records whose sender is not verified (bad or missing signature,
-- unknown or withdrawn terminal, another terminal's source, stale time): no
-- answer goes to whoever they claim to be; ops see them here (yigongti-dlq
-- unverified) to help a real terminal whose signing is broken. Never the payload.
CREATE TABLE unverified_intake (
    id               bigserial PRIMARY KEY,
    topic            text NOT NULL,
    kafka_partition  integer NOT NULL,
    kafka_offset     bigint NOT NULL,
    claimed_terminal text,                  -- as claimed, when it is a well-formed id
    reason           text NOT NULL,
    seen_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, kafka_partition, kafka_offset)
);
CREATE INDEX unverified_intake_seen_at ON unverified_intake (seen_at);

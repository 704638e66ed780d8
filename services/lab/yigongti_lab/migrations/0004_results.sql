-- Results through confirmation and verification, critical values and their
-- call-backs, the mutual-recognition registry (互认), and charges.

CREATE TABLE results (
    observation_id   text PRIMARY KEY,
    order_id         text NOT NULL REFERENCES orders,
    barcode          text NOT NULL REFERENCES specimens,
    test_code        text NOT NULL,        -- the ordered test (a panel for its lines)
    code             text NOT NULL,        -- the result line
    value            text,
    comparator       text,
    coded_value      text,
    unit             text,
    reference_low    text,
    reference_high   text,
    flag             text NOT NULL,
    critical         text,                 -- direction, when critical
    delta_failed     boolean NOT NULL DEFAULT false,
    analyser_id      text NOT NULL,
    run_at           timestamptz NOT NULL,
    reported_at      timestamptz NOT NULL DEFAULT db_now(),
    status           text NOT NULL,        -- reported | confirmed | verified | superseded
    confirmed_by     text,
    confirmed_at     timestamptz,
    verified_by      text,
    verified_at      timestamptz,
    report_revision  integer,
    supersedes       text REFERENCES results
);
CREATE INDEX results_order ON results (order_id, status);
CREATE INDEX results_barcode ON results (barcode, status);

CREATE TABLE reports (
    report_id   text NOT NULL,
    revision    integer NOT NULL,
    order_id    text NOT NULL REFERENCES orders,
    by_staff    text NOT NULL,
    at          timestamptz NOT NULL,
    reason      text,                      -- amendment reason; null for verification
    PRIMARY KEY (report_id, revision)
);

CREATE TABLE critical_values (
    critical_id      text PRIMARY KEY,
    order_id         text NOT NULL REFERENCES orders,
    observation_id   text NOT NULL REFERENCES results,
    raised_at        timestamptz NOT NULL,
    level            integer NOT NULL DEFAULT 0,
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    channel          text
);

CREATE TABLE critical_calls (
    id           bigserial PRIMARY KEY,
    critical_id  text NOT NULL REFERENCES critical_values,
    kind         text NOT NULL,            -- call_back | terminal_ack
    called_by    text,
    reached      text,
    outcome      text NOT NULL,
    at           timestamptz NOT NULL
);

CREATE TABLE recognised_results (
    observation_id text PRIMARY KEY REFERENCES results,
    patient_ref    text NOT NULL,
    test_code      text NOT NULL,
    report_id      text NOT NULL,
    revision       integer NOT NULL,
    performed_by   text NOT NULL,
    verified_at    timestamptz NOT NULL,
    valid_until    timestamptz NOT NULL,
    superseded_at  timestamptz
);
CREATE INDEX recognised_lookup ON recognised_results (patient_ref, test_code, valid_until)
    WHERE superseded_at IS NULL;

-- An order's test answered by a recognised result instead of a new test.
CREATE TABLE result_reuses (
    order_id       text NOT NULL REFERENCES orders,
    test_code      text NOT NULL,
    observation_id text NOT NULL REFERENCES results,
    PRIMARY KEY (order_id, test_code)
);

CREATE TABLE charges (
    charge_id   text PRIMARY KEY,
    order_id    text NOT NULL REFERENCES orders,
    test_code   text NOT NULL,
    item_code   text NOT NULL,
    amount      numeric(12, 2) NOT NULL,
    posted_at   timestamptz NOT NULL,
    reversed_at timestamptz,
    UNIQUE (order_id, test_code)           -- once per test, however often asked
);

-- The referral service's own state. Events carry codes and references; the
-- discharge summaries' and care plans' prose stays here, never in an event.

-- One row per referral case: the state machine's case (domain.py) as `data`,
-- and the columns the HTTP queries and metrics select on.
CREATE TABLE cases (
    referral_id        text PRIMARY KEY,
    state              text,                 -- NULL: records parked, no request yet
    direction          text,
    urgency            text,
    from_institution   text,
    to_institution     text,
    patient_ref        text,
    root_referral_id   text,
    parent_referral_id text,
    accept_by          timestamptz,
    opened_at          timestamptz,
    accepted_at        timestamptz,
    departed_at        timestamptz,
    arrived_at         timestamptz,
    closed_at          timestamptz,
    data               jsonb NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT db_now()
);
CREATE INDEX cases_sender ON cases (from_institution, opened_at);
CREATE INDEX cases_receiver ON cases (to_institution, opened_at);
CREATE INDEX cases_patient ON cases (patient_ref, state);
CREATE INDEX cases_root ON cases (root_referral_id);

-- Where each intake record (and HTTP action) came from, so a record that was
-- parked in a case and refused later is answered to its sender.
CREATE TABLE intake_origins (
    ce_id              text PRIMARY KEY,
    ce_type            text NOT NULL,
    ce_source          text NOT NULL,
    referral_id        text NOT NULL,
    sender_institution text,
    received_at        timestamptz NOT NULL DEFAULT db_now()
);

-- Recognised results and studies (互认) per patient, indexed as the lab's and
-- the diagnosis service's events arrive, whether or not a case exists yet, so
-- a referral attaches earlier ones. `ref` is what a referral names:
-- "lab:<observation_id>" or "study:<recognition_id>".
CREATE TABLE recognised (
    ref           text PRIMARY KEY,
    patient_ref   text NOT NULL,
    kind          text NOT NULL,             -- lab | study
    performed_by  text NOT NULL,
    recognised_at timestamptz NOT NULL,
    valid_until   timestamptz NOT NULL,
    detail        jsonb NOT NULL,
    superseded_by text
);
CREATE INDEX recognised_patient ON recognised (patient_ref, valid_until);

-- Suggestions made from critical findings (the finding → suggestion time).
CREATE TABLE suggestions (
    suggestion_id     text PRIMARY KEY,
    patient_ref       text NOT NULL,
    from_institution  text NOT NULL,
    to_institution    text NOT NULL,
    finding           text NOT NULL,
    finding_raised_at timestamptz NOT NULL,
    suggested_at      timestamptz NOT NULL
);
CREATE INDEX suggestions_institution ON suggestions (from_institution, suggested_at);

-- Discharge summaries submitted over HTTP: the text stays here; the event
-- carries summary_id.
CREATE TABLE discharge_summaries (
    summary_id   text PRIMARY KEY,
    referral_id  text NOT NULL,
    text         text NOT NULL,
    submitted_by text NOT NULL,
    submitted_at timestamptz NOT NULL DEFAULT db_now()
);

-- Who sees what in the feed (kit migration 0009): an event about a case goes
-- to both ends; a suggestion to the institution of the finding; a forwarded
-- critical value to the receiver only (for information); an intake
-- rejection to the institution of the verified sending terminal.
CREATE OR REPLACE FUNCTION feed_route(event outbox)
    RETURNS TABLE (institution_id text, type text, payload jsonb)
    LANGUAGE sql STABLE AS $$
    SELECT feed_sender_institution(event), NULL::text, NULL::jsonb
     WHERE event.type = 'yigongti.intake.rejected.v1'
    UNION ALL
    SELECT event.payload->>'to_institution', NULL, NULL
     WHERE event.type NOT IN ('yigongti.intake.rejected.v1', 'yigongti.referral.suggested.v1')
    UNION ALL
    SELECT event.payload->>'from_institution', NULL, NULL
     WHERE event.type NOT IN ('yigongti.intake.rejected.v1',
                              'yigongti.referral.critical_value.forwarded.v1') $$;

-- The diagnosis service's tables (DESIGN §4 Diagnosis). Findings text stays here;
-- events carry coded conclusions.

-- An uploaded ECG (claim check): only the waveform, the channel definitions and
-- the acquisition time (recording.py's stored form), never the DICOM patient
-- module. Bound to the uploading institution, used by one request.
CREATE TABLE recordings (
    recording_ref  text PRIMARY KEY,
    institution_id text NOT NULL,
    data           bytea NOT NULL,
    size_bytes     integer NOT NULL CHECK (size_bytes <= 4 * 1024 * 1024),
    source         text NOT NULL,
    sample_rate_hz double precision NOT NULL,
    duration_s     double precision NOT NULL,
    acquired_at    timestamptz,
    label          text,
    measurements   jsonb,
    measure_error  text,
    uploaded_by    text NOT NULL,
    uploaded_at    timestamptz NOT NULL DEFAULT db_now(),
    used_by        text UNIQUE,
    -- sha256 of the stored form: an identical recording reuses the measurements
    -- (the analysis is deterministic), so a re-sent file costs no worker time.
    sha256         text NOT NULL
);
CREATE INDEX recordings_sha256 ON recordings (sha256) WHERE measurements IS NOT NULL;

CREATE TABLE requests (
    request_id             text PRIMARY KEY,
    visit_id               text NOT NULL,
    patient_ref            text NOT NULL,
    sex                    text NOT NULL,
    age                    jsonb NOT NULL,
    modality               text NOT NULL,
    recording_ref          text REFERENCES recordings (recording_ref),
    study_instance_uid     text,
    accession_number       text,
    study                  jsonb,          -- series, instance count, modalities (PACS)
    indications            text[] NOT NULL,
    symptom_onset          timestamptz,
    first_contact_at       timestamptz,
    clinician_priority     text,
    requesting_institution text NOT NULL,
    requesting_clinician   text NOT NULL,
    requested_at           timestamptz NOT NULL,
    reading_centre         text NOT NULL,
    priority               text NOT NULL,
    priority_rank          smallint NOT NULL,  -- 0 STAT, 1 URGENT, 2 ROUTINE: worklist order
    priority_reasons       text[] NOT NULL,
    due_at                 timestamptz NOT NULL,
    status                 text NOT NULL CHECK (status IN ('queued', 'claimed', 'reported',
                                                           'withdrawn')),
    claimed_by             text,
    lease_until            timestamptz,
    queued_at              timestamptz NOT NULL,
    claimed_at             timestamptz,
    reported_at            timestamptz,
    withdrawn_at           timestamptz
);
CREATE INDEX requests_worklist ON requests (reading_centre, priority_rank, due_at)
    WHERE status = 'queued';
CREATE INDEX requests_patient ON requests (patient_ref);

-- Out-of-scope claims and reads, recorded (answered like a missing study).
CREATE TABLE scope_refusals (
    id          bigserial PRIMARY KEY,
    request_id  text NOT NULL,
    user_id     text NOT NULL,
    institution text NOT NULL,
    action      text NOT NULL,
    at          timestamptz NOT NULL DEFAULT db_now()
);

-- Every revision of a report; revision 1 is the signed original, kept unchanged.
CREATE TABLE reports (
    report_id   text NOT NULL,
    request_id  text NOT NULL REFERENCES requests (request_id),
    revision    smallint NOT NULL,
    findings    text NOT NULL,
    impression  text NOT NULL,
    conclusions text[] NOT NULL,
    critical    boolean NOT NULL,
    reader      text NOT NULL,
    reason      text,
    signed_at   timestamptz NOT NULL,
    PRIMARY KEY (report_id, revision),
    UNIQUE (request_id, revision)
);

CREATE TABLE critical_findings (
    finding_id      text PRIMARY KEY,
    request_id      text NOT NULL REFERENCES requests (request_id),
    report_id       text NOT NULL,
    conclusion      text NOT NULL,
    raised_at       timestamptz NOT NULL,
    acknowledge_by  timestamptz NOT NULL,
    step            smallint NOT NULL DEFAULT 0,
    acknowledged_at timestamptz,
    acknowledged_by text,
    channel         text
);

-- Each acknowledgement attempt and call, with its read-back status.
CREATE TABLE critical_calls (
    id         bigserial PRIMARY KEY,
    finding_id text NOT NULL REFERENCES critical_findings (finding_id),
    kind       text NOT NULL,   -- terminal_ack | escalation | call_back
    called_by  text,            -- the reader who phoned (call_back)
    reached    text,
    read_back  boolean NOT NULL,
    at         timestamptz NOT NULL
);

-- One reading fee per request, posted once (the primary key).
CREATE TABLE charges (
    request_id  text PRIMARY KEY REFERENCES requests (request_id),
    charge_id   text NOT NULL UNIQUE,
    item_code   text NOT NULL,
    amount      numeric(12, 2) NOT NULL,
    posted_at   timestamptz NOT NULL,
    reversed_at timestamptz
);

CREATE TABLE recognitions (
    recognition_id text PRIMARY KEY,
    request_id     text NOT NULL REFERENCES requests (request_id),
    patient_ref    text NOT NULL,
    modality       text NOT NULL,
    performed_by   text NOT NULL,
    reading_centre text NOT NULL,
    study_instance_uid text,
    recording_ref  text,
    reported_at    timestamptz NOT NULL,
    valid_until    timestamptz NOT NULL,
    supersedes     text
);
CREATE INDEX recognitions_patient ON recognitions (patient_ref, valid_until);

-- An imaging request waiting for its study on the PACS (parked), then refused.
CREATE TABLE parked (
    request_id  text PRIMARY KEY,
    payload     jsonb NOT NULL,
    origin      jsonb NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT db_now(),
    give_up_at  timestamptz NOT NULL,
    refused_at  timestamptz
);

-- The clinic's feed (kit migration 0009): an event goes to its requesting
-- institution; an intake rejection to the verified sending terminal's. Queue
-- movements inside the centre (claimed, released, overdue, escalated) stay out.
CREATE OR REPLACE FUNCTION feed_route(event outbox)
    RETURNS TABLE (institution_id text, type text, payload jsonb)
    LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN event.type = 'yigongti.intake.rejected.v1'
                THEN feed_sender_institution(event)
                ELSE coalesce(event.payload->>'requesting_institution',
                              (SELECT r.requesting_institution FROM requests r
                                WHERE r.request_id = event.aggregateid)) END,
           NULL::text, NULL::jsonb
    WHERE event.type NOT IN ('yigongti.diagnosis.claimed.v1',
                             'yigongti.diagnosis.released.v1',
                             'yigongti.diagnosis.overdue.v1',
                             'yigongti.diagnosis.critical_finding.escalated.v1') $$;

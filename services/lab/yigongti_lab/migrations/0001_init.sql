-- The lab centre's own state. Free text and identities never reach events;
-- the tables hold only what the lab needs (patient as patient_ref).

CREATE TABLE orders (
    order_id             text PRIMARY KEY,
    visit_id             text NOT NULL,
    patient_ref          text NOT NULL,
    sex                  text NOT NULL,
    age_value            integer NOT NULL,
    age_unit             text NOT NULL,
    ordering_institution text NOT NULL,
    ordering_clinician   text NOT NULL,
    lab_centre           text NOT NULL,
    priority             text NOT NULL,
    status               text NOT NULL,
    ordered_at           timestamptz NOT NULL,
    accepted_at          timestamptz NOT NULL DEFAULT db_now()
);
CREATE INDEX orders_institution ON orders (ordering_institution, accepted_at);
CREATE INDEX orders_patient ON orders (patient_ref);

-- One row per ordered test; bound to the tube that carries it.
CREATE TABLE order_tests (
    order_id        text NOT NULL REFERENCES orders,
    test_code       text NOT NULL,
    override_reason text,
    status          text NOT NULL,           -- ordered | collected | cancelled | avoided
    barcode         text,
    PRIMARY KEY (order_id, test_code)
);

CREATE TABLE specimens (
    barcode          text PRIMARY KEY,
    order_id         text NOT NULL REFERENCES orders,
    tube             text NOT NULL,
    processing_state text NOT NULL,
    state            text NOT NULL,          -- collected → in_transit → received → …
    collected_at     timestamptz NOT NULL,
    centrifuged_at   timestamptz,
    collector_id     text NOT NULL,
    recollection_of  text,
    updated_at       timestamptz NOT NULL DEFAULT db_now()
);
CREATE INDEX specimens_order ON specimens (order_id);

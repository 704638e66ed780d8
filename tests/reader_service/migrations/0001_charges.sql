CREATE TABLE charges_applied (id bigserial PRIMARY KEY, charge_id text NOT NULL, ce_id text NOT NULL);
CREATE TABLE reversals_applied (id bigserial PRIMARY KEY, charge_id text NOT NULL, ce_id text NOT NULL);

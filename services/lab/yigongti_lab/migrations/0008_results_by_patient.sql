-- The delta check compares a result with the patient's previous verified result
-- of the same line, from any member hospital's order. Found through orders it
-- cost a join whose plan went wrong while the tables were young (a scan of every
-- verified result, 9 ms a run in the benchmark); the patient is now on the
-- result itself, with an index for exactly that question.
ALTER TABLE results ADD COLUMN patient_ref text;
UPDATE results r SET patient_ref = o.patient_ref FROM orders o WHERE o.order_id = r.order_id;
ALTER TABLE results ALTER COLUMN patient_ref SET NOT NULL;
CREATE INDEX results_patient_line ON results (patient_ref, code, run_at DESC)
    WHERE status = 'verified' AND value IS NOT NULL;

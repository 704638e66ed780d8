-- The report's history (`reports`) has one row per release: each verification
-- (a report is often released in parts, one tube or test at a time) and each
-- amendment. Keyed by (report_id, revision), a second verification at the same
-- revision was dropped by ON CONFLICT DO NOTHING, so the history lost who
-- verified the later parts and when. The revision stays the report's amendment
-- count (a verification belongs to the revision current when it is made);
-- each amendment still makes exactly one new revision.
ALTER TABLE reports DROP CONSTRAINT reports_pkey;
ALTER TABLE reports ADD COLUMN entry bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
CREATE INDEX reports_by_revision ON reports (report_id, revision);
CREATE INDEX reports_of_order ON reports (order_id, entry);
CREATE UNIQUE INDEX reports_one_amendment_a_revision ON reports (report_id, revision)
    WHERE reason IS NOT NULL;

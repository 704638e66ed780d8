-- The order's status is derived from its tests (domain.order_status, DESIGN §5);
-- the stored column was written once at acceptance and never kept up, so it
-- could only mislead whoever read the table.
ALTER TABLE orders DROP COLUMN status;

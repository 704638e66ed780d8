-- Tubes are looked up by barcode on every step after collection (bench: ~7
-- queries per journey scanned order_tests without it).
CREATE INDEX order_tests_barcode ON order_tests (barcode);

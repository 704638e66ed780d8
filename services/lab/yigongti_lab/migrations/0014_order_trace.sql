-- The trace the order was placed in: an analyser's HL7 message carries no trace
-- context, so the listener links its span to the traces of the tubes' orders.
ALTER TABLE orders ADD COLUMN traceparent text;

-- The clinic feed moves to the kit's (kit migration 0009: the `feed` table,
-- filled when the relay marks an event sent). What stays the lab's is the
-- rule of who sees what, feed_route():
-- - an event about an order goes to its ordering institution;
-- - an intake rejection goes to the institution of the verified sending terminal;
-- - results reach the clinic once verified (issue 8 item 17): a
--   LabResultsReported shows only that the tube is being tested
--   (yigongti.lab.specimen.in_testing.v1: order, barcode, time), and a
--   LabResultsConfirmed (a step inside the lab) is not in the feed; a
--   critical value goes out when the technologist confirms it.
DROP TRIGGER outbox_to_clinic_feed ON outbox;
DROP FUNCTION feed_from_outbox();

INSERT INTO feed (institution_id, ce_id, type, aggregate_id, payload, created_at)
SELECT institution_id, ce_id, type, order_id, payload, created_at FROM clinic_feed ORDER BY seq;
DROP TABLE clinic_feed;

CREATE OR REPLACE FUNCTION feed_route(event outbox)
    RETURNS TABLE (institution_id text, type text, payload jsonb)
    LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN event.type = 'yigongti.intake.rejected.v1'
                THEN feed_sender_institution(event)
                ELSE coalesce(event.payload->>'ordering_institution',
                              (SELECT o.ordering_institution FROM orders o
                                WHERE o.order_id = event.aggregateid)) END,
           CASE WHEN event.type = 'yigongti.lab.results.reported.v1'
                THEN 'yigongti.lab.specimen.in_testing.v1' END,
           CASE WHEN event.type = 'yigongti.lab.results.reported.v1'
                THEN jsonb_build_object('order_id', event.payload->'order_id',
                                        'barcode', event.payload->'barcode',
                                        'at', event.payload->'reported_at') END
    WHERE event.type <> 'yigongti.lab.results.confirmed.v1' $$;

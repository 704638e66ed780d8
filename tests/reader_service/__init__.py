"""A small service that reads the lab's charges, standing in for a subscriber
(settlement) in the kit's subscription tests. It counts what it applies
without any idempotence of its own, so a double effect shows."""

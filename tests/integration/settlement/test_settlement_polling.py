"""What settlement's consumers and relay are built with: the consumers no
counter waits on (the charges subscriptions, the intake) poll less than the
broker kind's default, and the relay lets events leave in batches (the
settlement bench's CPU per settlement; charges.py, app.py)."""

from __future__ import annotations

from yigongti_kit.kafka import consumer_tuning
from yigongti_settlement.charges import CHARGES_FETCH_WAIT_MS


def _fetch_wait(handler) -> int:
    return handler.subscriber.consumer._fetcher._fetch_max_wait_ms


async def test_consumers_no_counter_waits_on_poll_less_and_events_leave_in_batches(settlement):
    runtime = settlement.runtime
    default = consumer_tuning(runtime.settings)["fetch_max_wait_ms"]
    readers = runtime.subscription_consumers
    assert {owner: _fetch_wait(reader) for owner, reader in readers.items()} == {
        owner: CHARGES_FETCH_WAIT_MS for owner in readers}
    assert set(readers) and CHARGES_FETCH_WAIT_MS > default
    assert _fetch_wait(runtime.consumer) == 100 >= default  # Apache Kafka: 100 already
    assert runtime.relay.min_wait == 0.02

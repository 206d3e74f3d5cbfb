"""Pacing aiokafka's metadata retries and quieting its loggers while Kafka is away."""

from __future__ import annotations

import logging

from stagekit.backoff import Backoff
from stagekit.kafkapace import RateLimitedFilter, pace_metadata
from stagekit.ratelog import RateLimitedLog


class FakeClient:
    """Fails the metadata updates the test tells it to (True: success)."""

    def __init__(self, outcomes: list[bool]) -> None:
        self.outcomes = outcomes

    async def _metadata_update(self, cluster: object, topics: object) -> bool:
        return self.outcomes.pop(0)


async def test_failed_metadata_updates_wait_a_growing_delay_reset_by_success() -> None:
    client = FakeClient([False, False, False, True, False])
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    assert pace_metadata(client, lambda: Backoff(0.2, 0.5), sleep=sleep)
    got = [await client._metadata_update(None, set()) for _ in range(5)]
    assert got == [False, False, False, True, False]
    assert slept == [0.2, 0.4, 0.5, 0.2]  # capped; the success reset the delay


async def test_the_installed_aiokafka_client_can_be_paced() -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
    try:
        assert pace_metadata(producer.client, lambda: Backoff(0.2, 1.0))
    finally:
        await producer.stop()


async def test_updates_start_at_least_the_minimum_interval_apart() -> None:
    client = FakeClient([True, True, False, True])
    now = [0.0]
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)
        now[0] += delay

    pace_metadata(
        client, lambda: Backoff(2.0, 4.0), min_interval_s=0.5, sleep=sleep, clock=lambda: now[0]
    )
    await client._metadata_update(None, set())  # the first: no wait
    now[0] += 0.1
    await client._metadata_update(None, set())  # a success, asked again at once
    await client._metadata_update(None, set())  # a failure: then the backoff delay
    await client._metadata_update(None, set())  # already longer ago than the interval
    assert slept == [0.4, 0.5, 2.0]


def test_a_client_without_the_method_is_left_alone() -> None:
    assert not pace_metadata(object(), lambda: Backoff(0.2, 1.0))


def test_repeated_client_lines_are_held_back_and_counted() -> None:
    now = [0.0]
    logger = logging.getLogger("tests.kafkapace.repeated")
    logger.propagate = False
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger.addHandler(Keep())
    logger.addFilter(RateLimitedFilter(RateLimitedLog(lines=1, per_s=60.0, clock=lambda: now[0])))
    for _ in range(5):
        logger.error("Unable connect to node with id %s: %s", 1, "refused")
    logger.error("Unable to update metadata from %s", [1])
    now[0] = 60.0
    logger.error("Unable connect to node with id %s: %s", 1, "refused")
    assert seen == [
        "Unable connect to node with id 1: refused",
        "Unable to update metadata from [1]",
        "Unable connect to node with id 1: refused suppressed=4",
    ]

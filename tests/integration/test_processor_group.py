"""The processor's consumer group against the real Kafka: how members join it.

aiokafka 0.14 sends one JoinGroup per assignor listed in
``partition_assignment_strategy``, each with a different protocol list
(aio-libs/aiokafka#1168, not released). With two assignors, members that join
at once made the coordinator rebalance again at each other's second JoinGroup
("Updating metadata for member ... during CompletingRebalance"), for minutes:
about one start in two of three members here, and a CI run where a processor
waited more than 120 s to join. These tests start members at once and count
their joins; and a member of a release before the range assignor, still in
the group, is named rather than joined.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from cloud_processor.config import KafkaSettings
from cloud_processor.kafka import GroupProtocolError, KafkaSource
from cloud_processor.ports import Partition
from stagekit.kafka import KafkaTarget, connection_keys, create_topics, delete_topics
from telemetry_contract import KafkaTopics, kafka_topics

pytestmark = pytest.mark.integration

#: Members started at once, and how many times.
MEMBERS = 3
ROUNDS = 5
#: A clean start of MEMBERS at once needs at most one JoinGroup per member per
#: rebalance, and there are at most MEMBERS rebalances (one per late joiner).
MAX_JOINS = MEMBERS * MEMBERS
#: A clean start takes seconds; a storm, minutes.
WITHIN_S = 60.0


class Topics:
    def __init__(self, kafka: KafkaTarget) -> None:
        self.kafka = kafka
        self.prefix = f"grp{uuid.uuid4().hex[:8]}"
        self.topics: KafkaTopics = kafka_topics(self.prefix)

    def settings(self, group: str) -> KafkaSettings:
        return KafkaSettings(
            **connection_keys(self.kafka, "processor"),
            topic_prefix=self.prefix,
            group_id=f"{self.prefix}-{group}",
            client_id=f"{self.prefix}-{group}",
            session_timeout_ms=10_000,
        )

    @property
    def read(self) -> list[str]:
        return [self.topics.telemetry, self.topics.status, self.topics.edge_alerts]


@pytest.fixture
async def kafka_env(stack: dict[str, Any]) -> AsyncIterator[Topics]:
    env = Topics(stack["kafka"])
    await create_topics(env.kafka, env.read, partitions=3)
    yield env
    await delete_topics(env.kafka, env.read)


class Joins(logging.Handler):
    """Counts aiokafka's "Joined group" lines, per group."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("Joined group") and record.args:
            group = str(record.args[0])  # type: ignore[index]
            self.seen[group] = self.seen.get(group, 0) + 1


@pytest.fixture
def joins() -> Iterator[Joins]:
    """Every "Joined group" line while the test runs: without the filters a
    stage installs on aiokafka's loggers (``stagekit.kafkapace.quiet_client_logs``,
    one line a minute per message, once per process: an earlier test may have)."""
    logger = logging.getLogger("aiokafka.consumer.group_coordinator")
    handler, level, filters = Joins(), logger.level, list(logger.filters)
    for f in filters:
        logger.removeFilter(f)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)
    for f in filters:
        logger.addFilter(f)


async def _nothing(partitions: set[Partition]) -> None:
    return None


def _settled(sources: list[KafkaSource]) -> bool:
    """Every member reads a share, and the shares split the 3 topics x 3
    partitions between them (no member still holds what moved on)."""
    shares = [set(s.assignment()) for s in sources]
    every = [tp for share in shares for tp in share]
    return all(shares) and len(every) == len(set(every)) == 9


async def _start_at_once(env: Topics, group: str, sources: list[KafkaSource]) -> float:
    """Start MEMBERS sources of one group at once (into ``sources``, for the
    caller to stop) and keep them polling until the group has settled; the
    seconds that took (TimeoutError after WITHIN_S)."""
    settings = env.settings(group)
    sources.extend(KafkaSource(settings, env.read) for _ in range(MEMBERS))

    settled = asyncio.Event()

    async def poll(source: KafkaSource) -> None:
        while True:
            await source.getmany(timeout_ms=100, max_records=100)
            if _settled(sources):
                settled.set()

    async def settle() -> None:
        await asyncio.gather(*(s.start(_nothing, _nothing) for s in sources))
        polls = [asyncio.create_task(poll(s)) for s in sources]
        try:
            await settled.wait()
        finally:
            for task in polls:
                task.cancel()

    began = time.monotonic()
    await asyncio.wait_for(settle(), WITHIN_S)
    return time.monotonic() - began


async def test_members_started_at_once_join_without_a_rebalance_storm(
    kafka_env: Topics, joins: Joins
) -> None:
    for n in range(ROUNDS):
        group = f"storm{n}"
        sources: list[KafkaSource] = []
        try:
            took = await _start_at_once(kafka_env, group, sources)
        except TimeoutError:
            count = joins.seen.get(kafka_env.settings(group).group_id, 0)
            pytest.fail(
                f"round {n}: the group did not settle in {WITHIN_S:.0f} s, "
                f"after {count} joins (a rebalance storm)"
            )
        finally:
            for s in sources:
                await s.stop()
        count = joins.seen.get(kafka_env.settings(group).group_id, 0)
        assert count >= MEMBERS, f"round {n}: {count} join lines seen of {MEMBERS} members"
        assert count <= MAX_JOINS, (
            f"round {n}: {count} joins of {MEMBERS} members in {took:.1f} s (a rebalance storm)"
        )


async def test_a_member_of_an_earlier_release_is_named_rather_than_joined(
    kafka_env: Topics,
) -> None:
    settings = kafka_env.settings("mixed")
    # What processors before the range assignor ran: aiokafka's default, round robin.
    earlier = AIOKafkaConsumer(
        *kafka_env.read,
        **settings.client_options(),
        group_id=settings.group_id,
        enable_auto_commit=False,
    )
    await earlier.start()
    try:
        await earlier.getmany(timeout_ms=2000)
        assert earlier.assignment()
        source = KafkaSource(settings, kafka_env.read)
        with pytest.raises(GroupProtocolError) as raised:
            await asyncio.wait_for(source.start(_nothing, _nothing), 60.0)
        await source.stop()
        text = str(raised.value)
        assert repr(settings.group_id) in text and "round robin" in text
        assert "stop every processor of the group" in text
    finally:
        await earlier.stop()

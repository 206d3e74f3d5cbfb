"""Source: what the Kafka topics hold -- Gaps, readings, alert changes.

Topics are read from the beginning up to their end offsets as of the call,
with no consumer group: nothing is committed and nobody else's position
moves. Connections take the shared :class:`~stagekit.settings.KafkaSettings`
(TLS, SASL) or, for tools and tests, a plain ``host:port`` string; topic
metadata comes from :func:`stagekit.kafka.partitions_of`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any

from stagekit.kafka import KafkaTarget, partitions_of, settings_for
from thermowatch.accounting.alerts import PublishedChange, parse_alert_changes
from thermowatch.accounting.readings import GapRange, parse_gaps, reading_keys

__all__ = [
    "fetch_alert_changes",
    "fetch_gaps",
    "fetch_reading_keys",
    "read_records",
    "read_topic",
    "topic_partitions",
    "wait_devices_in_topic",
    "wait_missing_in_topic",
]

Kafka = KafkaTarget


def topic_partitions(described: Iterable[Mapping[str, Any]]) -> list[Any]:
    """TopicPartitions of the existing topics in an admin ``describe_topics`` answer.

    >>> topic_partitions([{"error_code": 0, "topic": "t", "partitions": [{"partition": 1}]},
    ...                   {"error_code": 3, "topic": "gone", "partitions": []}])
    [TopicPartition(topic='t', partition=1)]
    """
    from aiokafka import TopicPartition

    return [
        TopicPartition(str(t["topic"]), int(p["partition"]))
        for t in described
        if t.get("error_code", 0) == 0
        for p in sorted(t.get("partitions", []), key=lambda p: int(p["partition"]))
    ]


async def read_topic(kafka: Kafka, topic: str) -> list[bytes]:
    """Every record value of ``topic`` (see :func:`read_records`)."""
    return [value for value, _ in await read_records(kafka, topic)]


async def read_records(kafka: Kafka, topic: str) -> list[tuple[bytes, int]]:
    """``(value, timestamp ms)`` of every record of ``topic``, up to the end offsets as of the call.

    No consumer group: nothing is committed, nobody else's position moves.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    found = await partitions_of(kafka, [topic])
    tps = [TopicPartition(t, p) for t, parts in found.items() for p in parts]
    values: list[tuple[bytes, int]] = []
    if not tps:
        return values
    consumer = AIOKafkaConsumer(
        **settings_for(kafka).client_options(),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        todo = {tp for tp in tps if ends[tp] > 0}
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for records in batch.values():
                values.extend((r.value, int(r.timestamp)) for r in records if r.value is not None)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()
    return values


async def fetch_gaps(kafka: Kafka, topic: str, devices: Iterable[str]) -> list[GapRange]:
    """Every ``Gap`` of ``devices`` in the Kafka telemetry ``topic``."""
    return parse_gaps(await read_topic(kafka, topic), devices)


async def fetch_reading_keys(kafka: Kafka, topic: str) -> dict[tuple[str, int], int]:
    """Records per ``(device_id, seq)`` of the readings in the Kafka telemetry ``topic``."""
    return reading_keys(await read_topic(kafka, topic))


async def fetch_alert_changes(kafka: Kafka, topic: str) -> list[PublishedChange]:
    """Every alert change published on the alerts ``topic`` so far."""
    return parse_alert_changes(await read_records(kafka, topic))


def wait_devices_in_topic(
    kafka: Kafka, topic: str, devices: Iterable[str], *, timeout_s: float, poll_s: float = 2.0
) -> bool:
    """Poll the Kafka telemetry ``topic`` until every device has a reading there.

    False when ``timeout_s`` passed first. For drivers (tests, experiments),
    not for code running in an event loop.
    """
    wanted = set(devices)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        keys = asyncio.run(fetch_reading_keys(kafka, topic))
        if {d for d, _ in keys} >= wanted:
            return True
        time.sleep(poll_s)
    return False


def wait_missing_in_topic(
    kafka: Kafka,
    topic: str,
    allocated: Mapping[str, Iterable[int]],
    *,
    timeout_s: float,
    poll_s: float,
) -> list[tuple[str, int]]:
    """The allocated ``(device, seq)`` not in the Kafka telemetry ``topic``.

    Polled until none is missing or ``timeout_s`` has passed (the topic is
    read at least once); what is still missing then is returned.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        keys = asyncio.run(fetch_reading_keys(kafka, topic))
        missing = [(d, s) for d, seqs in allocated.items() for s in seqs if (d, s) not in keys]
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(poll_s)

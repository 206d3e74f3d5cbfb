"""Hostile records on the real Kafka and search server: the processor skips
each one as a dead letter, commits past it, and stores every valid reading of
the other devices on the same partition exactly once, without a restart."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from cloud_processor.config import (
    HttpSettings,
    KafkaSettings,
    ProcessorConfig,
    RulesConfig,
    SearchSettings,
)
from cloud_processor.factory import build_processor
from stagekit.kafka import connection_keys, create_topics, delete_topics, settings_for
from stagekit.search import api as search
from stagekit.search.api import SearchError
from stagekit.search.indices import INDEXES, IndexNames
from telemetry_contract import DeadLetter, Reading, decode, encode, kafka_topics
from telemetry_contract.deadletter import DEADLETTER_LIMIT
from testsupport.search import admin_backend

pytestmark = pytest.mark.integration

DEVICES = [f"ok-{i}" for i in range(6)]
ROUNDS = 12


def hostile(now: int) -> dict[str, bytes]:
    """One of each class; the gateway would refuse most, a foreign producer need not."""
    reading = {
        "type": "reading",
        "schema_version": 1,
        "device_id": "evil-1",
        "sensor_id": "host",
        "site": "s1",
        "seq": 1,
        "ts": now,
        "temp_c": 5.0,
        "quality": "ok",
    }
    body = json.dumps(reading)[:-1]
    return {
        "record_900k": b'{"type":"reading","pad":"' + b"x" * 900_000 + b'"}',
        "deep_nesting": b"[" * 1000 + b"]" * 1000,
        "deep_object": b'{"a":' * 1000 + b"1" + b"}" * 1000,
        "year_10000": json.dumps({**reading, "ts": 253_402_300_800_000}).encode(),
        "nan_under_a.b": (body + ', "a.b": NaN}').encode(),
        "nan_nested_a_b": (body + ', "a": {"b": NaN}}').encode(),
        "surrogate_key": (body + ', "\\ud800": NaN}').encode(),
        "random_bytes": bytes(range(256)) * 8,
        "empty": b"",
    }


async def wait_for(check: Callable[[], Awaitable[bool]], within: float = 90.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"condition not met within {within} s")


class Env:
    def __init__(self, stack: dict[str, Any]) -> None:
        self.prefix = f"h{uuid.uuid4().hex[:8]}"
        self.topics = kafka_topics(self.prefix)
        self.kafka = stack["kafka"]
        self.names = IndexNames(f"{self.prefix}-")
        self.search = stack["search"]
        self.backend = admin_backend(self.search)

    def config(self) -> ProcessorConfig:
        return ProcessorConfig(
            kafka=KafkaSettings(
                **connection_keys(self.kafka, "processor"),
                topic_prefix=self.prefix,
                group_id=f"{self.prefix}-g",
                client_id=f"{self.prefix}-g",
                commit_interval_s=0.5,
                poll_timeout_ms=200,
                max_batch=50,  # hostile and valid records share batches
                session_timeout_ms=10_000,
            ),
            search=SearchSettings.from_endpoint(
                self.search,
                "admin",
                index_prefix=self.names.prefix,
                refresh_interval="1s",
                retry_initial_s=0.2,
                retry_max_s=2.0,
                timeout_s=10.0,
            ),
            rules=RulesConfig(threshold_high_c=8.0, min_duration_s=0),
            http=HttpSettings(enabled=False),
        )

    async def readings(self) -> list[str]:
        await self.backend.perform(search.refresh(self.names.readings_pattern))
        body = {"size": 10_000, "_source": False, "query": {"match_all": {}}}
        answer = await self.backend.perform(search.search(self.names.readings_pattern, body))
        return [h["_id"] for h in answer["hits"]["hits"]]

    async def close(self) -> None:
        with suppress(SearchError):
            await self.backend.perform(search.delete_index(f"{self.names.prefix}*"))
        for spec in INDEXES:
            with suppress(SearchError):
                await self.backend.perform(
                    search.Request("DELETE", f"/_index_template/{self.names.base(spec)}")
                )
        await self.backend.close()


@pytest.fixture
async def env(stack: dict[str, Any]) -> AsyncIterator[Env]:
    e = Env(stack)
    await create_topics(e.kafka, list(e.topics.all()), partitions=1)
    yield e
    await e.close()
    await delete_topics(e.kafka, e.topics.all())


async def test_hostile_records_are_dead_lettered_and_skipped_valid_readings_stored_once(
    env: Env,
) -> None:
    now = int(time.time() * 1000)
    bad = hostile(now)
    values: list[bytes] = []
    expected: list[str] = []
    names = sorted(bad)
    for r in range(ROUNDS):
        for i, device in enumerate(DEVICES):
            seq = r + 1
            reading = Reading(
                device_id=device,
                sensor_id="host",
                site="s1",
                seq=seq,
                ts=now - 60_000 + r * 1000,
                temp_c=9.5 if (r, i) == (3, 0) else 5.0,
            )
            values.append(encode(reading))
            expected.append(f"{device}:{seq}")
            if i % 2 == 0:  # a hostile record between valid readings, same partition
                values.append(bad[names[(r * 3 + i // 2) % len(names)]])
    n_hostile = len(values) - len(expected)

    producer = AIOKafkaProducer(
        **settings_for(env.kafka).client_options(), acks="all", max_request_size=2 * 1024 * 1024
    )
    await producer.start()
    try:
        for v in values:  # one partition, in this order
            await producer.send_and_wait(env.topics.telemetry, v, key=b"k")
    finally:
        await producer.stop()

    processor = build_processor(env.config())
    await processor.start()
    stop = asyncio.Event()
    task = asyncio.create_task(processor.run(stop))
    try:

        async def all_stored() -> bool:
            assert not task.done(), task  # never stops (no restart either: one instance)
            return len(await env.readings()) >= len(expected)

        await wait_for(all_stored)

        tp = TopicPartition(env.topics.telemetry, 0)

        async def committed_to_end() -> bool:
            assert not task.done(), task
            consumer = AIOKafkaConsumer(
                **settings_for(env.kafka).client_options(),
                group_id=env.config().kafka.group_id,
                enable_auto_commit=False,
            )
            await consumer.start()
            try:
                end = (await consumer.end_offsets([tp]))[tp]
                return (await consumer.committed(tp) or 0) == end == len(values)
            finally:
                await consumer.stop()

        await wait_for(committed_to_end, within=30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await processor.close()

    stored = await env.readings()
    assert sorted(stored) == sorted(expected)  # every valid reading, exactly once

    letters: list[DeadLetter] = []
    consumer = AIOKafkaConsumer(
        env.topics.deadletter,
        **settings_for(env.kafka).client_options(),
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 30
        while len(letters) < n_hostile and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for rec in records:
                    assert len(rec.value) <= DEADLETTER_LIMIT
                    letter = decode(rec.value)
                    assert isinstance(letter, DeadLetter)
                    letters.append(letter)
    finally:
        await consumer.stop()
    assert len(letters) == n_hostile
    assert {letter.source_topic for letter in letters} == {env.topics.telemetry}
    assert any("record of 900" in letter.detail for letter in letters)
    registry = processor.metrics.registry
    assert registry.get_sample_value("thermowatch_processor_invalid_records_total") == n_hostile

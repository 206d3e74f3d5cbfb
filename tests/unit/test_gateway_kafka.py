"""The Kafka sink with a fake producer: confirm only what Kafka confirmed, retry the rest."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, OutOfOrderSequenceNumber

from gateway.bridge import bridge
from gateway.config import KafkaSettings
from gateway.kafka import KafkaSink
from gateway.metrics import Metrics
from telemetry_contract import kafka_topics

TOPICS = kafka_topics("tw")


class FakeBatch:
    def __init__(self, capacity: int) -> None:
        self.records: list[tuple[bytes | None, bytes, list[Any]]] = []
        self.capacity = capacity

    def append(self, *, key: bytes | None, value: bytes, timestamp: None, headers: Any) -> Any:
        assert isinstance(headers, list)  # aiokafka's builder insists on a list
        if len(self.records) >= self.capacity:
            return None
        self.records.append((key, value, headers))
        return object()


class HangError(Exception):
    """Plan entry: the batch's future never resolves."""


class FakeProducer:
    """Fails the batches the test tells it to; records what it accepted."""

    def __init__(self, plan: list[BaseException | None], capacity: int) -> None:
        self.plan = plan
        self.capacity = capacity
        self.written: list[tuple[str, int, bytes | None]] = []
        self.stopped = False
        self.hung: list[asyncio.Future[None]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        outcome = self.plan.pop(0) if self.plan else None
        if isinstance(outcome, HangError):
            self.hung.append(future)  # unresolved until the test says so
            return future
        if outcome is None:
            self.written.extend((topic, partition, k) for k, _, _ in batch.records)
            future.set_result(None)
        else:
            future.set_exception(outcome)
        return future


class Sink:
    """A KafkaSink on fake producers (made through its ``producer_factory``)."""

    def __init__(
        self,
        plan: list[BaseException | None],
        capacity: int = 100,
        producer: type[FakeProducer] = FakeProducer,
    ) -> None:
        self.written_tokens: list[Any] = []
        self.metrics = Metrics()
        self.producers: list[FakeProducer] = []
        self.plan, self.capacity, self.producer = plan, capacity, producer
        settings = KafkaSettings(linger_ms=0, create_topics=False, retry_backoff_max_s=0.05)
        self.sink = KafkaSink(settings, TOPICS, self.metrics, producer_factory=self.new_producer)

    def new_producer(self) -> FakeProducer:
        producer = self.producer(self.plan, self.capacity)
        self.producers.append(producer)
        return producer

    async def start(self) -> None:
        await self.sink.start(self.written_tokens.append)

    def submit(self, rec: Any, token: Any) -> None:
        self.sink.submit(rec, token)

    async def stop(self) -> None:
        await self.sink.stop()


def record(device: str, seq: int) -> Any:
    payload = (
        f'{{"type":"reading","device_id":"{device}","sensor_id":"host","site":"s1",'
        f'"seq":{seq},"ts":1767225600000,"temp_c":20.0}}'
    ).encode()
    rec = bridge(
        f"thermowatch/s1/{device}/telemetry",
        payload,
        received_ms=1_767_225_600_000,
        gateway_id="g",
        topics=TOPICS,
    )
    assert rec.reason is None
    return rec


async def wait_until(predicate: Any) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_confirms_every_record_once_written() -> None:
    sink = Sink(plan=[])
    await sink.start()
    try:
        for i in range(10):
            sink.submit(record(f"d{i % 3}", i), i)
        await wait_until(lambda: len(sink.written_tokens) == 10)
        assert sorted(sink.written_tokens) == list(range(10))
        assert sink.sink.healthy and sink.sink.oldest_pending_s() is None
        # One device, one partition (murmur2 of the key, as the Java client).
        parts = {}
        for _, partition, key in sink.producers[0].written:
            parts.setdefault(key, set()).add(partition)
        assert all(len(p) == 1 for p in parts.values())
    finally:
        await sink.stop()


async def test_retriable_failure_is_retried_until_written() -> None:
    sink = Sink(plan=[KafkaTimeoutError(), KafkaTimeoutError()])
    await sink.start()
    try:
        sink.submit(record("d1", 1), "a")
        await wait_until(lambda: sink.written_tokens == ["a"])
        assert len(sink.producers) == 1  # same producer: the error was retriable
        assert sink.sink.healthy
        errors = sink.metrics.kafka_errors.labels("KafkaTimeoutError")._value.get()
        assert errors == 2
    finally:
        await sink.stop()


async def test_fatal_failure_replaces_the_producer_and_retries() -> None:
    sink = Sink(plan=[OutOfOrderSequenceNumber()])
    await sink.start()
    try:
        sink.submit(record("d1", 1), "a")
        await wait_until(lambda: sink.written_tokens == ["a"])
        assert len(sink.producers) == 2 and sink.producers[0].stopped
        assert sink.metrics.reconnects.labels("kafka")._value.get() == 1
    finally:
        await sink.stop()


async def test_nothing_confirmed_while_kafka_fails() -> None:
    sink = Sink(plan=[KafkaTimeoutError()] * 1000)
    await sink.start()
    try:
        sink.submit(record("d1", 1), "a")
        await asyncio.sleep(0.5)
        assert sink.written_tokens == []
        assert not sink.sink.healthy
        assert sink.sink.oldest_pending_s() is not None
    finally:
        await sink.stop()


async def test_full_batches_are_split() -> None:
    sink = Sink(plan=[], capacity=3)
    await sink.start()
    try:
        for i in range(10):
            sink.submit(record("d1", i), i)
        await wait_until(lambda: len(sink.written_tokens) == 10)
        assert len(sink.producers[0].written) == 10
    finally:
        await sink.stop()


class CancellingProducer(FakeProducer):
    """The first batch's future is cancelled, as aiokafka does when a producer stops."""

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        if not getattr(self, "cancelled_one", False):
            self.cancelled_one = True
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.05, future.cancel)
            return future
        return await super().send_batch(batch, topic, partition=partition)


async def test_a_cancelled_batch_is_sent_again() -> None:
    sink = Sink(plan=[], producer=CancellingProducer)
    await sink.start()
    try:
        sink.submit(record("d1", 1), "a")
        await wait_until(lambda: sink.written_tokens == ["a"])
    finally:
        await sink.stop()


async def test_batches_hanging_in_a_replaced_producer_are_sent_again() -> None:
    sink = Sink(plan=[HangError(), OutOfOrderSequenceNumber()])
    await sink.start()
    try:
        sink.submit(record("d1", 1), "a")  # its batch hangs in producer 1
        await asyncio.sleep(0.05)
        sink.submit(record("d2", 2), "b")  # fatal error: producer 1 is replaced
        await wait_until(lambda: sorted(sink.written_tokens) == ["a", "b"])
        assert len(sink.producers) == 2 and sink.producers[0].stopped
    finally:
        await sink.stop()


async def test_a_batch_failing_after_its_producer_was_replaced_is_not_reported() -> None:
    """aiokafka fails a stopped producer's pending batches later; the sink gave
    up on them already, and their exceptions must not reach asyncio's
    "Future exception was never retrieved" log."""
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    loop.set_exception_handler(lambda _loop, ctx: reported.append(str(ctx.get("message"))))
    sink = Sink(plan=[HangError(), OutOfOrderSequenceNumber()])
    await sink.start()
    try:
        sink.submit(record("d1", 1), "a")
        await asyncio.sleep(0.05)
        sink.submit(record("d2", 2), "b")
        await wait_until(lambda: sorted(sink.written_tokens) == ["a", "b"])
        hung = sink.producers[0].hung
        assert len(hung) == 1
        hung[0].set_exception(KafkaTimeoutError())
        hung.clear()
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        await sink.stop()
        loop.set_exception_handler(None)
    assert not [m for m in reported if "never retrieved" in m], reported


class RefusingProducer(FakeProducer):
    """Kafka is not there: every start fails."""

    async def start(self) -> None:
        raise KafkaConnectionError("no broker")


async def test_stop_ends_the_connect_retries_at_once() -> None:
    settings = KafkaSettings(create_topics=False, retry_backoff_max_s=60.0)
    sink = KafkaSink(settings, TOPICS, Metrics(), producer_factory=lambda: RefusingProducer([], 1))
    starting = asyncio.create_task(sink.start(lambda _token: None))
    await asyncio.sleep(1.0)  # retrying: 0.2 s, 0.4 s, then 0.8 s
    assert not starting.done()
    stopped_at = time.monotonic()
    await asyncio.wait_for(sink.stop(), 5)
    await asyncio.wait_for(starting, 5)  # returns without flushing
    assert time.monotonic() - stopped_at < 0.5
    assert not sink.healthy and sink.broken is None


async def test_an_outage_logs_one_warning_and_a_summary_not_one_per_retry(caplog: Any) -> None:
    sink = Sink(plan=[KafkaTimeoutError()] * 30)
    caplog.set_level(logging.DEBUG, logger="gateway.kafka")
    await sink.start()
    try:
        sink.submit(record("d1", 1), "a")
        await wait_until(lambda: sink.written_tokens == ["a"])
    finally:
        await sink.stop()
    errors = sink.metrics.kafka_errors.labels("KafkaTimeoutError")._value.get()
    assert errors == 30  # every failure is counted ...
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.kafka"]
    events = [line.split()[0] for line in lines if "write" in line or "still" in line]
    # ... but logged once when Kafka turns bad, once back, a summary a minute between.
    assert events == ["event=kafka_write_failed", "event=kafka_write_ok_again"], lines

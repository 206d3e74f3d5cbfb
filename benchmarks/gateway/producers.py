"""The Kafka side's limits: (b) a bare aiokafka producer, (b2) its batch API.

Both send the gateway's exact records (value, key, headers, built by
:func:`gateway.bridge.bridge`) with the gateway's producer settings and the
same in-flight bound, into a topic of their own.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from benchmarks.gateway.workload import PARTITIONS, RECEIVE_MAXIMUM, Fleet, cpu_self
from gateway.bridge import bridge
from stagekit.kafka import KafkaTarget, create_topics, settings_for
from telemetry_contract import kafka_topics

__all__ = ["bench_bare_batch_producer", "bench_bare_producer"]


def _producer(kafka: KafkaTarget) -> AIOKafkaProducer:
    """A producer with the gateway's settings."""
    return AIOKafkaProducer(
        **settings_for(kafka).client_options(),
        enable_idempotence=True,
        acks="all",
        compression_type="lz4",
        linger_ms=5,
        max_batch_size=256 * 1024,
    )


def _records(fleet: Fleet, topics: Any) -> list[Any]:
    """The gateway's exact Kafka records for the fleet's messages."""
    records = [
        bridge(t, p, received_ms=int(time.time() * 1000), gateway_id="bench", topics=topics)
        for t, p in fleet.messages
    ]
    assert all(r.reason is None for r in records)
    return records


def _producer_result(n: int, seconds: float, cpu: float) -> dict[str, Any]:
    return {
        "cpu_us_per_msg": round(cpu / n * 1e6, 1),
        "messages": n,
        "seconds": round(seconds, 3),
        "per_s": round(n / seconds, 1),
    }


async def bench_bare_producer(kafka: KafkaTarget, fleet: Fleet, run: str) -> dict[str, Any]:
    topics = kafka_topics(f"bp{run}")
    records = _records(fleet, topics)
    await create_topics(kafka, [topics.telemetry], partitions=PARTITIONS)
    producer = _producer(kafka)
    await producer.start()
    latencies: list[float] = []
    window = asyncio.Semaphore(RECEIVE_MAXIMUM)

    async def one(rec: Any) -> None:
        async with window:
            t0 = time.perf_counter()
            fut = await producer.send(rec.topic, rec.value, key=rec.key, headers=list(rec.headers))
            await fut
            latencies.append(time.perf_counter() - t0)

    try:
        started, cpu0 = time.perf_counter(), cpu_self()
        await asyncio.gather(*(one(r) for r in records))
        seconds = time.perf_counter() - started
        cpu = cpu_self() - cpu0
    finally:
        await producer.stop()
    latencies.sort()
    return {
        **_producer_result(len(records), seconds, cpu),
        "latency_ms_p50": round(latencies[len(latencies) // 2] * 1000, 2),
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


async def bench_bare_batch_producer(kafka: KafkaTarget, fleet: Fleet, run: str) -> dict[str, Any]:
    """(b) again through aiokafka's batch API (``create_batch``/``send_batch``).

    ``send()`` costs far more per record than building the batches; the
    gateway builds its own, so the fair Kafka limit is the faster of the two.
    Same settings, same murmur2 partitioning by key, the same in-flight bound
    (a window of RECEIVE_MAXIMUM records).
    """
    from aiokafka.partitioner import DefaultPartitioner

    topics = kafka_topics(f"bb{run}")
    records = _records(fleet, topics)
    await create_topics(kafka, [topics.telemetry], partitions=PARTITIONS)
    producer = _producer(kafka)
    await producer.start()
    partitioner = DefaultPartitioner()
    latencies: list[float] = []
    try:
        parts = sorted(await producer.partitions_for(topics.telemetry))
        started, cpu0 = time.perf_counter(), cpu_self()
        for i in range(0, len(records), RECEIVE_MAXIMUM):
            by_partition: dict[int, list[Any]] = {}
            for rec in records[i : i + RECEIVE_MAXIMUM]:
                by_partition.setdefault(partitioner(rec.key, parts, parts), []).append(rec)
            t0 = time.perf_counter()
            futures = []
            for partition, group in by_partition.items():
                batch = producer.create_batch()
                for rec in group:
                    appended = batch.append(
                        key=rec.key, value=rec.value, timestamp=None, headers=list(rec.headers)
                    )
                    assert appended is not None
                futures.append(
                    await producer.send_batch(batch, topics.telemetry, partition=partition)
                )
            await asyncio.gather(*futures)
            latencies.append(time.perf_counter() - t0)
        seconds = time.perf_counter() - started
        cpu = cpu_self() - cpu0
    finally:
        await producer.stop()
    latencies.sort()
    return {
        **_producer_result(len(records), seconds, cpu),
        "window_latency_ms_p50": round(latencies[len(latencies) // 2] * 1000, 2),
    }

"""The processor publishes alerts without waiting for bulk writes, and still
commits offsets only after the writes (fakes for Kafka and the search server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from aiokafka.structs import TopicPartition

from cloud_processor.app import Processor
from cloud_processor.config import KafkaSettings, ProcessorConfig, RulesConfig
from cloud_processor.documents import BulkItem
from cloud_processor.notifiers import AlertsTopicNotifier
from cloud_processor.storage import BulkTotals
from cloud_processor.testing import FakeProducer, FakeSource, FakeStore
from telemetry_contract import Reading, encode

TP = TopicPartition("lat.telemetry", 0)


class GatedStorage(FakeStore):
    """Bulk writes that finish only when the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.started: list[int] = []
        self.finished: list[int] = []

    async def write(self, items: Sequence[BulkItem], *, ordered: bool = False) -> BulkTotals:
        self.started.append(len(items))
        await self.gate.wait()
        self.finished.append(len(items))
        return BulkTotals(stored=len(items))


def _batch(first_offset: int, temps: list[float]) -> dict[Any, list[Any]]:
    now = int(time.time() * 1000) - 5_000
    records = [
        SimpleNamespace(
            offset=first_offset + i,
            value=encode(
                Reading(
                    device_id="lat-d1",
                    sensor_id="host",
                    site="lat",
                    seq=first_offset + i + 1,
                    ts=now + first_offset + i,
                    temp_c=t,
                )
            ),
        )
        for i, t in enumerate(temps)
    ]
    return {TP: records}


def _processor() -> tuple[Processor, GatedStorage, FakeProducer]:
    config = ProcessorConfig(
        kafka=KafkaSettings(topic_prefix="lat", max_batch=100),
        rules=RulesConfig(threshold_high_c=50.0, min_duration_s=0.0),
    )
    storage, producer = GatedStorage(), FakeProducer()
    p = Processor(
        config,
        source=FakeSource(TP),
        producer=producer,
        storage=storage,
        notifiers=[AlertsTopicNotifier(producer, "lat.alerts")],
    )
    return p, storage, producer


async def test_alert_is_published_while_earlier_bulk_writes_are_still_running() -> None:
    p, storage, producer = _processor()
    await p.handle(_batch(0, [20.0, 20.1]))  # its bulk write starts and blocks
    await asyncio.sleep(0)
    assert storage.started == [2] and storage.finished == []
    # The next batch holds a spike: its alert goes out although nothing is stored yet.
    await asyncio.wait_for(p.handle(_batch(2, [60.0])), 5)
    for _ in range(50):
        if producer.sent:
            break
        await asyncio.sleep(0.01)
    assert [t for t, _, _ in producer.sent] == ["lat.alerts"]
    assert b'"change":"opened"' in producer.sent[0][1]
    assert storage.finished == []
    # ... but nothing is committable before the writes are done.
    assert p.offsets.pending == {}
    storage.gate.set()
    await asyncio.wait_for(p.writes.drain(), 5)
    assert p.offsets.pending == {TP: 3}


async def test_batches_fetched_during_a_write_go_out_together_in_the_next_one() -> None:
    p, storage, _producer = _processor()
    await p.handle(_batch(0, [20.0]))
    await asyncio.sleep(0)
    for first in (1, 3, 5):  # three batches while the first write is blocked
        await asyncio.wait_for(p.handle(_batch(first, [20.0, 20.2])), 5)
    storage.gate.set()
    await asyncio.wait_for(p.writes.drain(), 5)
    assert storage.finished == [1, 6]  # one bulk for the three merged batches
    assert p.offsets.pending == {TP: 7}

"""Devices whose partition went to another processor are let go of: no alert
from their old owner, nothing of them left behind (pure, no services)."""

from __future__ import annotations

import asyncio

import msgspec
from aiokafka import TopicPartition

from cloud_processor.app import Processor
from cloud_processor.config import KafkaSettings, ProcessorConfig, RulesConfig
from cloud_processor.kafka import KafkaSource
from cloud_processor.rules import FleetRules
from cloud_processor.rules.settings import AlertSettings
from cloud_processor.testing import FakeProducer, FakeSource, FakeStore
from gateway.kafka import _PARTITIONER
from telemetry_contract import ChangeKind, Reading, encode, kafka_key

T0 = 1_767_225_600_000
TP0, TP1 = TopicPartition("h.telemetry", 0), TopicPartition("h.telemetry", 1)


class _Record:
    def __init__(self, value: bytes, offset: int) -> None:
        self.value, self.offset = value, offset


def reading(device: str, seq: int, ts: int, temp: float) -> Reading:
    return Reading(device_id=device, sensor_id="x", site="s1", seq=seq, ts=ts, temp_c=temp)


def test_a_device_that_moved_to_another_processor_raises_no_alert_here() -> None:
    """Before: the old owner kept the device and, ``stale_after_s`` later, opened
    a stale alert for a device that was reporting to its new owner."""
    now = [T0]
    source, store = FakeSource(TP0, TP1), FakeStore()
    rules = RulesConfig(threshold_high_c=8.0, min_duration_s=0, stale_after_s=300)
    p = Processor(
        ProcessorConfig(kafka=KafkaSettings(topic_prefix="h"), rules=rules),
        source=source,
        producer=FakeProducer(),
        storage=store,
        clock=lambda: now[0] / 1000,
    )
    batch = {
        TP0: [_Record(encode(reading("a", 1, T0, 4.0)), 0)],
        TP1: [_Record(encode(reading("b", 1, T0, 30.0)), 0)],  # b opens threshold_high
    }
    opened = p.batches.prepare(batch, T0).changes  # type: ignore[arg-type]
    assert [(c.alert.device_id, c.kind) for c in opened] == [("b", ChangeKind.OPENED)]
    store.alerts = [opened[0].alert]  # what the alerts index holds now

    async def rebalance() -> None:  # TP1 goes to another member
        await p._on_revoked({TP0, TP1})
        source.partitions = {TP0}
        source.owns = lambda device_id: device_id == "a"
        await p._on_assigned({TP0})

    asyncio.run(rebalance())
    assert p._resuming is not None and p._resuming.done()
    assert p.rules.book.open_count == 0  # b's alert is its new owner's, still open
    changes = p.rules.tick(T0 + 400_000)
    assert [(c.alert.device_id, c.alert.rule) for c in changes] == [("a", "stale_sensor")]
    assert p.rules.device_count == 1


def test_hand_over_drops_compacted_and_restored_devices_without_a_change() -> None:
    config = RulesConfig(stale_after_s=60, device_idle_s=60)
    rules = FleetRules(config, AlertSettings())
    for device in ("keep", "moved", "parked"):
        rules.on_reading(reading(device, 1, T0, 4.0), now_ms=T0)
    rules.on_reading(reading("keep", 2, T0 + 50_000, 4.0), now_ms=T0 + 50_000)
    rules.on_reading(reading("moved", 2, T0 + 50_000, 4.0), now_ms=T0 + 50_000)
    stale = rules.tick(T0 + 60_000)  # "parked" goes stale and is compacted
    assert [c.alert.device_id for c in stale] == ["parked"]
    rules.on_reading(reading("moved", 4, T0 + 60_000, 4.0), now_ms=T0 + 60_000)  # seq 3 missing
    assert rules.held_count == 1
    assert rules.book.open_count == 1 and rules.device_count == 3
    other = msgspec.structs.replace(
        stale[0].alert, alert_id="other.stale_sensor.1", device_id="other"
    )
    rules.restore([other], now_ms=T0 + 60_000)  # known here only by this alert
    assert rules.book.open_count == 2 and rules.device_count == 4

    dropped = rules.hand_over(lambda device_id: device_id == "keep")
    assert dropped == 2  # moved, parked ("other" had only an alert)
    assert rules.book.open_count == 0 and rules.device_count == 1
    assert rules.held_count == 0 and rules.next_release_ms() is None  # the new owner judges it
    assert rules.site_size("s1") == 1
    assert rules.book.devices() == set()
    assert rules.tick(T0 + 100_000) == []  # moved: no stale alert (keep's is due at 110 s)
    assert [c.alert.device_id for c in rules.tick(T0 + 110_000)] == ["keep"]


class _Consumer:
    """What :meth:`KafkaSource.owner` asks of an aiokafka consumer."""

    def __init__(self, partitions: set[int], mine: set[TopicPartition]) -> None:
        self._partitions, self._mine = partitions, mine

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self._partitions

    def assignment(self) -> set[TopicPartition]:
        return self._mine


def test_the_owner_test_agrees_with_the_gateways_partitioner() -> None:
    source = KafkaSource(KafkaSettings(topic_prefix="h"), ["h.telemetry", "h.status"])
    assert source.owner()("anything")  # not started: every device
    every = list(range(6))
    mine = {TopicPartition("h.telemetry", 1), TopicPartition("h.telemetry", 4)}
    source._consumer = _Consumer(set(every), mine | {TopicPartition("h.status", 2)})
    owns = source.owner()
    devices = [f"site-{i}/probe-{i % 7}" for i in range(2000)]
    want = [_PARTITIONER(kafka_key(d), every, every) in (1, 4) for d in devices]
    assert [owns(d) for d in devices] == want
    assert 0.2 < sum(want) / len(devices) < 0.47  # about 2 partitions of 6
    source.replay_from_ms = 0  # a replay reads every partition
    assert all(map(source.owner(), devices))


def test_a_device_silent_since_before_a_takeover_goes_stale_on_time() -> None:
    """Known only from storage (its windows): before, a device that fell
    silent just before its partition changed hands (or the processor
    restarted) never went stale on the new owner."""
    now = [T0 + 200_000]
    source, store = FakeSource(TP0), FakeStore()
    store.last_heard = [
        ("silent", "s1", T0 + 100_000),  # last reading 100 s ago
        ("talking", "s1", T0 + 100_000),  # reads on here
        ("elsewhere", "s1", T0 + 100_000),  # another processor's
        ("long-gone", "s1", T0 - 3_600_000),  # older than the lookback
    ]
    source.owns = lambda device_id: device_id != "elsewhere"
    p = Processor(
        ProcessorConfig(
            kafka=KafkaSettings(topic_prefix="h"), rules=RulesConfig(stale_after_s=300)
        ),
        source=source,
        producer=FakeProducer(),
        storage=store,
        clock=lambda: now[0] / 1000,
    )

    async def assigned() -> None:
        await p._on_assigned({TP0})
        assert p.rules.device_count == 0  # not in the rebalance callback: in the background
        assert p._resuming is not None
        await p._resuming

    asyncio.run(assigned())
    assert p.rules.device_count == 2  # silent, talking
    p.batches.prepare(
        {TP0: [_Record(encode(reading("talking", 9, T0 + 250_000, 4.0)), 0)]},  # type: ignore[dict-item]
        T0 + 250_000,
    )
    assert p.rules.tick(T0 + 399_999) == []
    changes = p.rules.tick(T0 + 400_000)  # 300 s after silent's last reading
    assert [(c.alert.device_id, c.alert.rule, c.alert.opened_at) for c in changes] == [
        ("silent", "stale_sensor", T0 + 400_000)
    ]
    assert p.rules.tick(T0 + 549_999) == []
    assert [c.alert.device_id for c in p.rules.tick(T0 + 550_000)] == ["talking"]

"""The processor's loop with fakes for Kafka and the search server: what is
written, published and committed, and in which order; the reorder stage's
hold on commits and polls (pure, no services)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

import pytest
from aiokafka.structs import TopicPartition

from cloud_processor.app import Processor
from cloud_processor.batches import Prepared
from cloud_processor.config import KafkaSettings, ProcessorConfig, RulesConfig, SearchSettings
from cloud_processor.documents import BulkItem
from cloud_processor.notifiers import AlertsTopicNotifier, Notifications
from cloud_processor.storage import BulkTotals
from cloud_processor.testing import FakeProducer, FakeSource, FakeStore
from telemetry_contract import AlertChange, Reading, decode, encode

T0 = 1_767_225_600_000
S = 1000


def reading(seq: int, temp: float, device: str = "d1", *, ts_s: float | None = None) -> Reading:
    return Reading(
        device_id=device,
        sensor_id="host",
        site="s1",
        seq=seq,
        ts=T0 + int((seq if ts_s is None else ts_s) * S),
        temp_c=temp,
    )


class _TP:
    def __init__(self, partition: int) -> None:
        self.topic, self.partition = "t.telemetry", partition


class _Record:
    def __init__(self, value: bytes, offset: int) -> None:
        self.value, self.offset = value, offset


def _processor(*tps: Any, clock: Any = None, **kw: Any) -> Processor:
    return Processor(
        ProcessorConfig(**kw),
        source=FakeSource(*tps),
        producer=FakeProducer(),
        storage=FakeStore(),
        **({} if clock is None else {"clock": clock}),
    )


# -- the reorder stage's hold on commits and polls ------------------------------


def test_commit_never_passes_a_held_reading_and_poll_wakes_for_its_release() -> None:
    now = [T0 / 1000]
    tp = _TP(0)
    p = _processor(tp, clock=lambda: now[0])
    out = Prepared()
    for offset, seq in ((10, 1), (11, 3), (12, 4)):
        p.batches.route(encode(reading(seq, 5.0)), T0, out, (tp, offset))
    assert len(out.readings) == 3  # stored at once, whatever the rules do
    assert p.commit_floor() == {tp: 11}  # seq 3 is held at offset 11
    assert p.poll_timeout_ms() == 200
    now[0] += 0.150
    assert p.poll_timeout_ms() == 50
    p.batches.route(encode(reading(2, 9.5)), T0, out, (tp, 13))
    assert [c.alert.rule for c in out.changes] == []  # no threshold configured by default
    assert p.commit_floor() == {}
    assert p.poll_timeout_ms() == ProcessorConfig().kafka.poll_timeout_ms


def test_a_hole_given_up_is_logged_with_its_seqs_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Readings lost between the edge and Kafka (no Gap for them) are named in the log."""
    now = [T0 / 1000]
    tp = _TP(0)
    p = _processor(tp, clock=lambda: now[0])
    batch = [_Record(encode(reading(s, 5.0)), 10 + i) for i, s in enumerate((1, 2, 6, 7))]
    p.batches.prepare({tp: batch}, int(now[0] * 1000))
    assert p.rules.held_count == 2  # 6 and 7 wait for 3..5
    now[0] += 0.250  # past reorder_wait_ms (200)
    with caplog.at_level("WARNING", logger="cloud_processor.batches"):
        p.batches.prepare({}, int(now[0] * 1000))
    assert p.rules.held_count == 0
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "event=seqs_given_up device=d1 first_seq=3 last_seq=5 count=3"
    ]
    assert p.metrics.registry.get_sample_value("thermowatch_processor_reorder_given_up_total") == 3


# -- the loop, end to end on fakes ----------------------------------------------

TP = TopicPartition("app.telemetry", 0)


class Journal:
    """One ordered record of what the fakes were asked to do."""

    def __init__(self) -> None:
        self.events: list[str] = []


class JournalProducer(FakeProducer):
    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Awaitable[Any]:
        self.journal.events.append(f"sent {topic}")
        return await super().send(topic, value, key)


class JournalStore(FakeStore):
    def __init__(self, journal: Journal) -> None:
        super().__init__()
        self.journal = journal

    async def write(self, items: Sequence[BulkItem], *, ordered: bool = False) -> BulkTotals:
        self.journal.events.append(f"wrote {items[0].index if items else '-'}")
        return await super().write(items, ordered=ordered)


class JournalSource(FakeSource):
    def __init__(self, journal: Journal, *tps: Any) -> None:
        super().__init__(*tps)
        self.journal = journal

    async def commit(self, offsets: Any) -> bool:
        self.journal.events.append("commit")
        return await super().commit(offsets)


async def test_a_batch_is_published_and_stored_before_its_offsets_are_committed() -> None:
    journal = Journal()
    config = ProcessorConfig(
        kafka=KafkaSettings(topic_prefix="app"),
        rules=RulesConfig(threshold_high_c=8.0, min_duration_s=0.0),
    )
    source = JournalSource(journal, TP)
    producer = JournalProducer(journal)
    storage = JournalStore(journal)
    p = Processor(
        config,
        source=source,
        producer=producer,
        storage=storage,
        notifiers=[AlertsTopicNotifier(producer, "app.alerts")],
        clock=lambda: (T0 + 60_000) / 1000,
    )
    values = [encode(reading(1, 5.0)), b'{"type":"reading"', encode(reading(2, 9.5))]
    source.batches.append({TP: [_Record(v, 40 + i) for i, v in enumerate(values)]})
    await p.start()
    assert source.started and p.ready
    stop = asyncio.Event()
    task = asyncio.create_task(p.run(stop))
    await asyncio.wait_for(source.drained.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 5)
    await p.close()
    await p.close()  # idempotent
    assert source.stopped

    assert source.commits == [{TP: 43}]
    # the alert goes out at once, the dead letter with the batch's write
    assert [t for t, _, _ in producer.sent] == ["app.alerts", "app.deadletter"]
    letter = decode(producer.sent[1][1])
    assert letter.reason == "not_json"  # type: ignore[union-attr]
    assert [i.id for i in storage.written] == ["d1:1", "d1:2", f"d1.threshold_high.{T0 + 2000}"]
    events = journal.events
    readings, alerts = f"wrote {p.names.readings_for(T0)}", "wrote alerts"  # FakeStore's index
    assert events.index("sent app.deadletter") < events.index(readings)
    assert events.index("sent app.alerts") < events.index(alerts)
    assert events[-1] == "commit"
    assert p.metrics.registry.get_sample_value("thermowatch_processor_invalid_records_total") == 1
    assert p.metrics.registry.get_sample_value("thermowatch_processor_commits_total") == 1


class Recorder:
    def __init__(self, name: str, log: list[tuple[str, int]], delay: float = 0.0) -> None:
        self.name, self.log, self.delay = name, log, delay
        self.closed = False

    async def notify(self, changes: Sequence[AlertChange]) -> None:
        for c in changes:
            await asyncio.sleep(self.delay)
            self.log.append((self.name, c.alert.version))

    async def close(self) -> None:
        self.closed = True


async def test_notifiers_run_in_their_order_and_batches_in_theirs() -> None:
    rules_cfg = RulesConfig(threshold_high_c=8.0, min_duration_s=0.0, hysteresis_c=1.0)
    p = _processor(TP, rules=rules_cfg)
    first = p.batches.prepare({TP: [_Record(encode(reading(1, 9.0)), 0)]}, T0).changes
    second = p.batches.prepare({TP: [_Record(encode(reading(2, 5.0)), 1)]}, T0).changes
    log: list[tuple[str, int]] = []
    slow, fast = Recorder("topic", log, delay=0.02), Recorder("webhook", log)
    chain = Notifications([slow, fast])
    a, b = chain.publish(first), chain.publish(second)
    assert a is not None and b is not None
    await asyncio.wait_for(b, 5)
    assert log == [("topic", 1), ("webhook", 1), ("topic", 2), ("webhook", 2)]
    await chain.close()
    assert slow.closed and fast.closed


async def test_an_unprotected_search_connection_is_a_warning_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One line naming why (the web view's test covers every reason)."""
    for search in (SearchSettings(url="http://127.0.0.1:9"), SearchSettings(username="p")):
        p = _processor(_TP(0), search=search)
        await p.start()
        await p.close()
    warnings = [r.message for r in caplog.records if "event=search_insecure" in r.message]
    assert len(warnings) == 1 and "plain http" in warnings[0], warnings

"""The webhook's notification queue: coalescing, rate limits, overflow, shutdown,
and an alert storm through the processor (fakes, virtual time: no timed test).

The dispatcher's clock is a manual one; after moving it a test calls
``wake()`` and ``await settled()`` (nothing is due any more), so every count
below is exact.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_processor.app import Processor
from cloud_processor.config import KafkaSettings, ProcessorConfig, WebhookSettings
from cloud_processor.dispatch import RESULTS, NotificationDispatcher, TokenBucket
from cloud_processor.feed import AlertFeed
from cloud_processor.metrics import Metrics
from cloud_processor.notifiers import AlertsTopicNotifier
from cloud_processor.testing import FakeProducer, FakeSource, FakeStore
from stagekit.config import ConfigError, loads
from telemetry_contract import (
    Alert,
    AlertChange,
    AlertStatus,
    ChangeKind,
    EdgeAlert,
    EdgeAlertKind,
    Reading,
    Severity,
    encode,
)

T0 = 1_767_225_600_000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Gate:
    """A notifier that records what it is given, optionally stuck until opened."""

    def __init__(self, open_: bool = True) -> None:
        self.got: list[AlertChange] = []
        self.gate = asyncio.Event()
        if open_:
            self.gate.set()
        self.closed = False

    async def notify(self, changes: Sequence[AlertChange]) -> None:
        await self.gate.wait()
        self.got.extend(changes)

    async def close(self) -> None:
        self.closed = True


async def offer_all(d: NotificationDispatcher, changes: Sequence[AlertChange]) -> None:
    """Offer each change, as the alerts-topic feed does."""
    for c in changes:
        d.offer(c)


def change(version: int = 1, device: str = "d1", rule: str = "edge_anomaly") -> AlertChange:
    severity = Severity.WARNING if version % 2 else Severity.CRITICAL
    alert = Alert(
        f"{device}.{rule}.1", device, "s1", rule, severity, AlertStatus.OPEN, version, 1, 1
    )
    return AlertChange(ChangeKind.OPENED if version == 1 else ChangeKind.UPDATED, alert)


def hook(**kw: Any) -> WebhookSettings:
    base: dict[str, Any] = {"url": "http://127.0.0.1:9/hook"}
    base.update(kw)
    return WebhookSettings(**base)


def balanced(d: NotificationDispatcher) -> bool:
    """Every offered change ended in exactly one result, or is still waiting."""
    return d.counts["offered"] == sum(d.counts[r] for r in RESULTS) + d.pending


async def step(d: NotificationDispatcher, clock: Clock, seconds: float) -> None:
    clock.now += seconds
    d.wake()
    await asyncio.wait_for(d.settled(), 5)


async def spin() -> None:
    """Let the worker take what is due (it may be stuck in the notifier after)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_changes_of_one_alert_within_the_window_become_one_with_the_latest_state() -> None:
    clock, inner = Clock(), Gate()
    d = NotificationDispatcher(inner, hook(coalesce_s=10.0), clock=clock)
    await offer_all(d, [change(1)])
    await step(d, clock, 0)
    await offer_all(d, [change(v) for v in range(2, 50)])
    await step(d, clock, 9.9)
    assert [c.alert.version for c in inner.got] == [1]  # the window is not over
    await step(d, clock, 0.1)
    assert [c.alert.version for c in inner.got] == [1, 49]  # the latest state, once
    assert d.counts["coalesced"] == 47 and d.counts["notified"] == 2
    # another alert key (rule) of the same device is not coalesced with it
    await offer_all(d, [change(1, rule="threshold_high")])
    await step(d, clock, 0)
    assert inner.got[-1].alert.rule == "threshold_high"
    assert balanced(d)
    await d.close()


async def test_coalescing_off_notifies_every_change_in_order() -> None:
    clock, inner = Clock(), Gate()
    d = NotificationDispatcher(inner, hook(coalesce_s=0.0, device_burst=100), clock=clock)
    await offer_all(d, [change(v) for v in range(1, 6)])
    await step(d, clock, 0)
    assert [c.alert.version for c in inner.got] == [1, 2, 3, 4, 5]
    assert d.counts["coalesced"] == 0 and balanced(d)
    await d.close()


async def test_per_device_rate_limit_holds_without_losing_the_latest_state() -> None:
    clock, inner = Clock(), Gate()
    cfg = hook(coalesce_s=0.5, device_rate_per_s=1.0, device_burst=2, rate_per_s=100.0, burst=100)
    d = NotificationDispatcher(inner, cfg, clock=clock)
    await offer_all(d, [change(1, rule=f"r{i}") for i in range(5)])
    await offer_all(d, [change(1, device="d2")])  # another device is not held by d1's bucket
    await step(d, clock, 0)
    assert [(c.alert.device_id, c.alert.rule) for c in inner.got] == [
        ("d1", "r0"),
        ("d1", "r1"),
        ("d2", "edge_anomaly"),
    ]
    assert d.counts["rate_limited"] == 3 and d.pending == 3
    await offer_all(d, [change(2, rule="r4")])  # held changes keep coalescing
    await step(d, clock, 1.0)
    await step(d, clock, 1.0)
    await step(d, clock, 1.0)
    assert [(c.alert.rule, c.alert.version) for c in inner.got[3:]] == [
        ("r2", 1),
        ("r3", 1),
        ("r4", 2),
    ]
    assert d.counts["rate_limited"] == 3 and d.counts["coalesced"] == 1 and balanced(d)
    await d.close()


async def test_global_rate_limit_spans_devices() -> None:
    clock, inner = Clock(), Gate()
    cfg = hook(coalesce_s=0.0, rate_per_s=0.5, burst=1, device_rate_per_s=100.0, device_burst=10)
    d = NotificationDispatcher(inner, cfg, clock=clock)
    await offer_all(d, [change(1, device=f"d{i}") for i in range(3)])
    await step(d, clock, 0)
    assert len(inner.got) == 1
    await step(d, clock, 1.0)
    assert len(inner.got) == 1
    await step(d, clock, 1.0)
    assert len(inner.got) == 2
    assert d.counts["rate_limited"] == 2 and balanced(d)
    await d.close()


async def test_a_full_queue_counts_and_logs_the_overflow_and_never_blocks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, inner = Clock(), Gate(open_=False)  # the receiver hangs
    metrics = Metrics()
    d = NotificationDispatcher(  # one worker: exactly one in flight
        inner, hook(queue_max=2, concurrency=1), clock=clock, metrics=metrics
    )
    with caplog.at_level(logging.WARNING, "cloud_processor.dispatch"):
        await asyncio.wait_for(offer_all(d, [change(1, rule="r0")]), 5)
        await spin()  # r0 is in flight, stuck
        changes = [change(1, rule=f"r{i}") for i in range(1, 6)] + [change(2, rule="r1")]
        await asyncio.wait_for(offer_all(d, changes), 5)  # returns: never waits for the receiver
        clock.now += 11
        d.offer(change(1, rule="r9"))
    assert (d.counts["overflow"], d.counts["coalesced"], d.pending) == (4, 1, 3)
    lines = [r.getMessage() for r in caplog.records if "notification_overflow" in r.getMessage()]
    assert len(lines) == 2  # one line per interval, with the count since the last one
    assert "dropped=1 " in lines[0] and "dropped=3 " in lines[1]
    sample = metrics.registry.get_sample_value
    assert sample("thermowatch_processor_notifications_total", {"result": "overflow"}) == 4
    assert sample("thermowatch_processor_notifications_pending") == 3
    assert balanced(d)
    d.settings = hook(queue_max=2, drain_timeout_s=0.0)
    await d.close()


async def test_close_drains_what_waits_then_counts_the_rest_as_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, inner = Clock(), Gate()
    d = NotificationDispatcher(inner, hook(coalesce_s=60.0, device_burst=1), clock=clock)
    await offer_all(d, [change(1, rule="a"), change(1, rule="b")])
    await step(d, clock, 0)
    await offer_all(d, [change(2, rule="a")])
    await step(d, clock, 0)
    assert len(inner.got) == 1 and d.pending == 2  # held by the window and the bucket
    await d.close()  # the drain ignores window and limits: one per key
    assert [(c.alert.rule, c.alert.version) for c in inner.got] == [("a", 1), ("b", 1), ("a", 2)]
    assert inner.closed and d.counts["dropped"] == 0 and balanced(d)
    d.offer(change(3, rule="a"))  # after close: counted, not queued
    assert d.counts["dropped"] == 1 and balanced(d)

    stuck = Gate(open_=False)
    d2 = NotificationDispatcher(stuck, hook(drain_timeout_s=0.0), clock=clock)
    await offer_all(d2, [change(1, rule="a"), change(1, rule="b")])
    await spin()
    with caplog.at_level(logging.WARNING, "cloud_processor.dispatch"):
        await asyncio.wait_for(d2.close(), 5)  # stops promptly although the receiver hangs
    assert d2.counts["dropped"] == 2 and d2.pending == 0 and balanced(d2)
    assert any("reason=shutdown count=2" in r.getMessage() for r in caplog.records)


async def test_storm_spread_over_time_is_bounded_by_the_window() -> None:
    """1,000 changes of one alert, 0.1 s apart (100 s): one notification per
    ``coalesce_s`` (10 s) plus the first, the last carrying the latest state."""
    clock, inner = Clock(), Gate()
    d = NotificationDispatcher(inner, hook(), clock=clock)  # defaults
    for v in range(1, 1001):
        d.offer(change(v))
        await step(d, clock, 0.1)
    await d.close()
    assert len(inner.got) == 1 + 100 // 10
    assert inner.got[-1].alert.version == 1000
    assert d.counts["coalesced"] == 1000 - len(inner.got) and balanced(d)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 2), st.sampled_from([0.0, 0.3, 2.0])),
        max_size=60,
    ),
    st.integers(1, 4),
)
def test_counts_always_add_up_and_limits_hold(ops: list[tuple[int, int, float]], qmax: int) -> None:
    async def run() -> None:
        clock, inner = Clock(), Gate()
        cfg = hook(coalesce_s=1.0, queue_max=qmax, device_rate_per_s=1.0, device_burst=2)
        d = NotificationDispatcher(inner, cfg, clock=clock)
        start = clock.now
        for version, (dev, rule, dt) in enumerate(ops, 1):
            d.offer(change(version, device=f"d{dev}", rule=f"r{rule}"))
            await step(d, clock, dt)
            assert balanced(d) and len(d._waiting) <= qmax
        elapsed = clock.now - start
        for dev in range(4):
            mine = sum(c.alert.device_id == f"d{dev}" for c in inner.got)
            assert mine <= 2 + 1.0 * elapsed + 1e-9  # the device bucket
        await d.close()
        assert balanced(d) and d.pending == 0

    asyncio.run(run())


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=5.0, burst=1, now=0.0)
    assert bucket.ready_at(0.0) == 0.0
    bucket.take(0.0)
    assert bucket.ready_at(0.0) == pytest.approx(0.2)
    assert bucket.ready_at(10.0) == 10.0 and bucket.full(10.0)


# -- the alert storm through the processor ---------------------------------------


class _TP:
    def __init__(self, partition: int, topic: str = "storm.telemetry") -> None:
        self.topic, self.partition = topic, partition


class _Record:
    def __init__(self, value: bytes, offset: int) -> None:
        self.value, self.offset = value, offset


async def test_alert_storm_of_one_device_yields_two_notifications_off_the_write_path() -> None:
    """1,000 edge alerts of alternating severity from one device, among readings
    of 30 others, while the webhook hangs.

    Bound: the storm is one alert key (``storm-1``, ``edge_anomaly``): its first
    change (the latest of the feed's first poll of the alerts topic) goes out at
    once, every later one within ``coalesce_s`` replaces the one waiting, and the
    drain at shutdown
    sends that (the latest state). So 2 notifications here (the storm takes no
    time on the dispatcher's clock); over a storm of T seconds: at most
    min(1 + ceil(T / coalesce_s), device_burst + device_rate_per_s * T) per key,
    plus one at shutdown.
    Meanwhile every reading is stored and committed although the webhook has not
    answered once, and the alerts topic has every change. The webhook's feed
    reads them from there (its own group) and commits the alerts topic only
    past what the webhook took (none while it hangs, all after the drain).
    """
    tp = _TP(0)
    source, producer, store = FakeSource(tp), FakeProducer(), FakeStore()
    config = ProcessorConfig(kafka=KafkaSettings(topic_prefix="storm", commit_interval_s=0.001))
    clock, webhook = Clock(), Gate(open_=False)
    dispatcher = NotificationDispatcher(webhook, config.webhook, clock=clock)
    atp = _TP(0, "storm.alerts")
    feed = AlertFeed(FakeSource(atp), dispatcher, commit_interval_s=0.001, max_batch=500)
    p = Processor(
        config,
        source=source,
        producer=producer,
        storage=store,
        notifiers=[AlertsTopicNotifier(producer, "storm.alerts"), feed],
        clock=lambda: (T0 + 600_000) / 1000,
    )
    values: list[bytes] = []
    for i in range(1000):
        values.append(
            encode(
                EdgeAlert(
                    device_id="storm-1",
                    site="s1",
                    alert_id=f"a{i}",
                    ts=T0 + i,
                    kind=EdgeAlertKind.ANOMALY,
                    severity=Severity.CRITICAL if i % 2 else Severity.WARNING,
                    message=f"<!channel> storm {i}",
                )
            )
        )
        if i % 10 == 0:
            for d in range(30):
                values.append(
                    encode(
                        Reading(
                            device_id=f"calm-{d}",
                            sensor_id="host",
                            site="s1",
                            seq=i // 10 + 1,
                            ts=T0 + i,
                            temp_c=4.0,
                        )
                    )
                )
    for start in range(0, len(values), 500):
        chunk = values[start : start + 500]
        source.batches.append({tp: [_Record(v, start + j) for j, v in enumerate(chunk)]})
    await p.start()
    stop = asyncio.Event()
    task = asyncio.create_task(p.run(stop))
    await asyncio.wait_for(source.drained.wait(), 30)
    stop.set()
    await asyncio.wait_for(task, 30)
    # the webhook never answered, yet every reading is stored and committed
    readings = [i for i in store.written if i.id.startswith("calm-")]
    assert len(readings) == 30 * 100
    assert source.commits[-1] == {tp: len(values)}
    assert webhook.got == []
    alerts_topic = [v for t, v, _ in producer.sent if t == "storm.alerts"]
    assert len(alerts_topic) == 1000  # the complete record: opened + 999 updates
    # the feed reads the topic in two polls of 500 while the webhook hangs
    alerts = feed.source
    assert isinstance(alerts, FakeSource)
    for start in range(0, 1000, 500):
        chunk = alerts_topic[start : start + 500]
        alerts.batches.append({atp: [_Record(v, start + j) for j, v in enumerate(chunk)]})
        alerts.drained.clear()
        await asyncio.wait_for(alerts.drained.wait(), 30)
        await spin()  # the worker takes what is due (and hangs in the webhook)
    await feed.commit()
    assert all(c == {atp: 0} for c in alerts.commits)  # nothing resolved yet
    webhook.gate.set()
    await p.close()
    assert alerts.commits[-1] == {atp: 1000} and alerts.stopped
    # the first batch's changes went out as one (the worker had not run yet),
    # everything after it as the second, at shutdown
    first, last = webhook.got  # exactly two notifications
    assert first.alert.version < 1000 and last.alert.version == 1000
    assert webhook.got[-1].alert.severity is Severity.CRITICAL  # the latest state
    assert dispatcher.counts["coalesced"] == 998 and dispatcher.counts["notified"] == 2
    assert balanced(dispatcher)


class Overlap:
    """A slow receiver that records how many notifications, and which keys, it
    holds at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.holding: list[AlertChange] = []
        self.most = 0
        self.got: list[AlertChange] = []
        self.overlapping_keys = 0

    async def notify(self, changes: Sequence[AlertChange]) -> None:
        (c,) = changes
        if any(h.alert.key == c.alert.key for h in self.holding):
            self.overlapping_keys += 1
        self.holding.append(c)
        self.most = max(self.most, len(self.holding))
        await self.release.wait()
        await asyncio.sleep(0.001 * (c.alert.version % 3))  # finish out of order
        self.holding.remove(c)
        self.got.append(c)

    async def close(self) -> None:
        pass


async def test_several_in_flight_but_one_alerts_changes_one_after_the_other_in_order() -> None:
    inner = Overlap()
    settings = hook(coalesce_s=0.0, concurrency=4, device_burst=100, burst=100)
    d = NotificationDispatcher(inner, settings, clock=Clock())
    stream = [change(v, rule="a") for v in range(1, 7)]
    stream += [change(1, rule=r) for r in ("b", "c", "d", "e", "f")]
    await offer_all(d, stream)
    await spin()
    assert inner.most == 4  # a slow receiver costs its round trip once per worker
    assert {c.alert.rule for c in inner.holding} == {"a", "b", "c", "d"}
    inner.release.set()
    await asyncio.wait_for(d.settled(), 5)
    assert inner.overlapping_keys == 0
    assert [c.alert.version for c in inner.got if c.alert.rule == "a"] == [1, 2, 3, 4, 5, 6]
    assert len(inner.got) == 11 and d.counts["notified"] == 11 and balanced(d)
    await d.close()


async def test_close_waits_for_every_notification_in_flight() -> None:
    inner = Overlap()
    inner.release.set()
    settings = hook(coalesce_s=0.0, concurrency=3, device_burst=100, burst=100)
    d = NotificationDispatcher(inner, settings, clock=Clock())
    await offer_all(d, [change(v, rule=r) for r in "abc" for v in (1, 2)])
    await d.close()
    assert len(inner.got) == 6 and d.counts["notified"] == 6 and d.counts["dropped"] == 0


def test_concurrency_is_validated_and_the_error_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"webhook.concurrency"):
        loads(ProcessorConfig, "[webhook]\nconcurrency = 0\n")

"""The webhook's feed from the alerts topic: which offsets it commits, and what a
restart after a crash delivers (fakes, virtual time: no timed test).

An alerts-topic offset is committed only once every change below it is
resolved: delivered, superseded by a delivered change of its key, refused by
the receiver, dropped on overflow, or not meant to be notified.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_processor.config import KafkaSettings, ProcessorConfig, WebhookSettings
from cloud_processor.dispatch import NotificationDispatcher
from cloud_processor.factory import build_processor, default_notifiers
from cloud_processor.feed import AlertFeed, Resolutions
from cloud_processor.kafka import AlertsSource
from cloud_processor.metrics import Metrics
from cloud_processor.testing import FakeProducer, FakeSource
from telemetry_contract import (
    Alert,
    AlertChange,
    AlertStatus,
    ChangeKind,
    Severity,
    encode_alert_change,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Gate:
    """A webhook that records what it is given, stuck until opened."""

    def __init__(self, open_: bool = True) -> None:
        self.got: list[AlertChange] = []
        self.gate = asyncio.Event()
        if open_:
            self.gate.set()

    async def notify(self, changes: Sequence[AlertChange]) -> None:
        await self.gate.wait()
        self.got.extend(changes)

    async def close(self) -> None:
        pass


class TP:
    def __init__(self, partition: int = 0) -> None:
        self.topic, self.partition = "t.alerts", partition

    def __repr__(self) -> str:
        return f"TP({self.partition})"


class Rec:
    def __init__(self, value: bytes, offset: int) -> None:
        self.value, self.offset = value, offset


def change(
    version: int, device: str = "d1", rule: str = "threshold_high", notify: bool = True
) -> AlertChange:
    alert = Alert(
        f"{device}.{rule}.1", device, "s1", rule, Severity.WARNING, AlertStatus.OPEN, version, 1, 1
    )
    kind = ChangeKind.OPENED if version == 1 else ChangeKind.UPDATED
    return AlertChange(kind, alert, notify)


def records(changes: Sequence[AlertChange], first: int = 0) -> list[Rec]:
    return [Rec(encode_alert_change(c), first + i) for i, c in enumerate(changes)]


def hook(**kw: Any) -> WebhookSettings:
    base: dict[str, Any] = {"url": "http://127.0.0.1:9/hook", "device_burst": 100}
    base.update(kw)
    return WebhookSettings(**base)


async def spin() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def step(d: NotificationDispatcher, clock: Clock, seconds: float) -> None:
    clock.now += seconds
    d.wake()
    await asyncio.wait_for(d.settled(), 5)


def feed_of(
    webhook: Gate, clock: Clock, tp: TP, metrics: Metrics | None = None, **kw: Any
) -> AlertFeed:
    dispatcher = NotificationDispatcher(webhook, hook(**kw), clock=clock)
    return AlertFeed(FakeSource(tp), dispatcher, commit_interval_s=3600, metrics=metrics)


def test_commits_stop_below_the_lowest_unresolved_offset() -> None:
    book, tp = Resolutions(), TP()
    tickets = [book.read(tp, off) for off in range(5)]
    for i in (1, 2, 4):
        book.resolve(tickets[i])
    assert book.committable() == {tp: 0}
    book.resolve(tickets[0])
    assert book.committable() == {tp: 3}
    book.committed({tp: 3})
    assert book.committable() == {}  # nothing moved since
    book.resolve(tickets[3])
    assert book.committable() == {tp: 5} and book.unresolved == 0


@settings(max_examples=60, deadline=None)
@given(st.permutations(range(12)), st.integers(0, 12))
def test_committable_is_the_first_unresolved_offset(order: list[int], k: int) -> None:
    book, tp = Resolutions(), TP()
    tickets = [book.read(tp, 100 + off) for off in range(12)]
    for i in order[:k]:
        book.resolve(tickets[i])
    open_ = sorted(set(range(12)) - set(order[:k]))
    assert book.committable() == {tp: 100 + (open_[0] if open_ else 12)}


def test_a_revoked_partition_ignores_tickets_of_its_old_epoch() -> None:
    book, tp = Resolutions(), TP()
    old = book.read(tp, 7)
    book.revoke({tp})
    new = book.read(tp, 7)  # the partition came back: read again from the commit
    book.resolve(old)
    assert book.committable() == {tp: 7}
    book.resolve(new)
    assert book.committable() == {tp: 8}


async def test_coalesced_changes_are_resolved_with_their_delivered_successor() -> None:
    tp, clock, webhook = TP(), Clock(), Gate(open_=False)
    feed = feed_of(webhook, clock, tp, coalesce_s=10.0)
    feed.handle({tp: records([change(1)])})
    await spin()  # v1 goes out at once (and hangs in the webhook)
    feed.handle({tp: records([change(2), change(3)], first=1)})  # wait, coalesced
    assert feed.book.committable() == {tp: 0}
    webhook.gate.set()
    await step(feed.dispatcher, clock, 0)
    assert [c.alert.version for c in webhook.got] == [1]
    assert feed.book.committable() == {tp: 1}  # 1 and 2 wait for 3, due in 10 s
    await step(feed.dispatcher, clock, 10.0)
    assert [c.alert.version for c in webhook.got] == [1, 3]
    assert feed.book.committable() == {tp: 3}  # 2 resolved with 3, never sent
    await feed.close()


async def test_overflow_refusal_and_unnotified_changes_are_resolved() -> None:
    tp, clock, webhook = TP(), Clock(), Gate(open_=False)
    feed = feed_of(webhook, clock, tp, queue_max=1, concurrency=1)  # one in flight
    feed.handle({tp: records([change(1, rule="a")])})
    await spin()  # in flight (hangs)
    feed.handle(
        {
            tp: [
                *records(
                    [change(1, rule="b"), change(1, rule="c")], first=1
                ),  # b waits, c overflows
                *records([change(2, rule="a", notify=False)], first=3),  # late: never notified
                Rec(b'{"not": "a change"}', 4),  # undecodable: logged, skipped
            ]
        }
    )
    assert feed.dispatcher.counts["overflow"] == 1 and feed.counts["undecodable"] == 1
    assert feed.book.committable() == {tp: 0} and feed.book.unresolved == 2  # a and b
    webhook.gate.set()
    await step(feed.dispatcher, clock, 0)
    assert [c.alert.rule for c in webhook.got] == ["a", "b"]
    assert feed.book.committable() == {tp: 5}
    await feed.close()


async def test_close_commits_only_what_is_resolved() -> None:
    tp, clock, webhook, metrics = TP(), Clock(), Gate(open_=False), Metrics()
    feed = feed_of(webhook, clock, tp, metrics, drain_timeout_s=0.0)
    source = feed.source
    assert isinstance(source, FakeSource)
    source.batches.append(
        {tp: [*records([change(1, device=f"d{i}") for i in range(3)]), Rec(b"", 3)]}
    )
    await feed.start()
    await asyncio.wait_for(source.drained.wait(), 5)  # the batch is handled
    text = metrics.render().decode()
    assert "thermowatch_processor_notifications_unresolved 3.0" in text
    assert "thermowatch_processor_notifications_undecodable_total 1.0" in text
    await asyncio.wait_for(feed.close(), 5)  # prompt although the webhook hangs
    assert source.commits[-1] == {tp: 0} and source.stopped
    assert feed.dispatcher.counts["dropped"] == 3


async def test_after_a_crash_the_latest_change_of_every_alert_reaches_the_webhook() -> None:
    """Changes of 3 alerts; the first run delivers some, commits, and dies
    (nothing drained, nothing more committed); the second run reads from the
    commit: every alert's latest version arrives, nothing below the commit
    comes again, and intermediate versions may be coalesced away."""
    tp, clock = TP(), Clock()
    stream = [change(v, device=f"d{i}") for v in range(1, 5) for i in range(3)]  # 12
    first = Gate()
    feed = feed_of(first, clock, tp, coalesce_s=10.0)
    feed.handle({tp: records(stream[:6])})  # v1 and v2 of each device
    await step(feed.dispatcher, clock, 0)  # v2 of each went out (v1 coalesced into it)
    feed.handle({tp: records(stream[6:], first=6)})  # v3, v4: wait for the window
    await feed.commit()
    source = feed.source
    assert isinstance(source, FakeSource)
    assert source.commits[-1] == {tp: 6}
    assert [c.alert.version for c in first.got] == [2, 2, 2]
    # kill -9: the worker and whatever waits are gone, nothing else is committed
    for worker in feed.dispatcher._tasks:
        worker.cancel()
    await spin()

    second = Gate()
    restart = feed_of(second, Clock(), tp, coalesce_s=10.0)
    committed = source.commits[-1][tp]
    again = restart.source
    assert isinstance(again, FakeSource)
    again.batches.append({tp: records(stream[committed:], first=committed)})
    await restart.start()
    await asyncio.wait_for(again.drained.wait(), 5)
    await restart.close()  # drains
    got = [(c.alert.alert_id, c.alert.version) for c in second.got]
    assert sorted(got) == [(f"d{i}.threshold_high.1", 4) for i in range(3)]
    assert again.commits[-1] == {tp: len(stream)}


def test_the_webhook_is_fed_from_the_alerts_topic_with_its_own_group() -> None:
    """One way to notify: the processor only publishes to the topic; the feed
    (group ``<kafka.group_id>-notify`` unless ``webhook.group_id``) notifies;
    a replay has no feed (the running processor's feed notifies what it publishes)."""
    kafka = KafkaSettings(topic_prefix="p", group_id="g")
    cfg = ProcessorConfig(kafka=kafka, webhook=hook())
    names = [type(n).__name__ for n in build_processor(cfg).notifications.notifiers]
    assert names == ["AlertsTopicNotifier", "AlertFeed"]
    replay = build_processor(cfg, replay_from_ms=0).notifications.notifiers
    assert [type(n).__name__ for n in replay] == ["AlertsTopicNotifier"]
    for webhook, group in ((hook(), "g-notify"), (hook(group_id="hooks"), "hooks")):
        (feed,) = [
            n
            for n in default_notifiers(ProcessorConfig(kafka=kafka, webhook=webhook), *_ports())
            if isinstance(n, AlertFeed)
        ]
        assert isinstance(feed.source, AlertsSource)
        assert feed.source._settings.group_id == group
        assert feed.source._topics == ["p.alerts"]


def _ports() -> tuple[FakeProducer, Metrics]:
    return FakeProducer(), Metrics()


class GrowingLog:
    """A consumer over one partition whose log gets a new record (stamped
    ``now_ms``) right after each question about offsets: the race between a
    new group's pinning and the first records produced after its start."""

    def __init__(self, old: int, now_ms: int) -> None:
        self.stamps = [now_ms - 10_000] * old  # produced before the start
        self.now_ms = now_ms
        self.seeks: dict[Any, int] = {}
        self.commits: list[dict[Any, int]] = []

    def _append(self) -> None:
        self.stamps.append(self.now_ms)

    async def committed(self, tp: Any) -> int | None:
        return None

    async def offsets_for_times(self, query: dict[Any, int]) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for tp, since in query.items():
            hit = next((i for i, ts in enumerate(self.stamps) if ts >= since), None)
            out[tp] = None if hit is None else type("Hit", (), {"offset": hit})()
        self._append()
        return out

    async def end_offsets(self, tps: Sequence[Any]) -> dict[Any, int]:
        out = dict.fromkeys(tps, len(self.stamps))
        self._append()
        return out

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks[tp] = offset

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.commits.append(dict(offsets))


async def test_a_new_group_never_skips_a_record_produced_while_it_pins() -> None:
    """Records produced after the start, while the new group works out where to
    begin, are read: it begins at the first of them, never past it."""
    since_ms = 1_000_000
    log = GrowingLog(old=5, now_ms=since_ms + 1)
    source = AlertsSource(KafkaSettings(), ["p.alerts"])
    source._consumer = log
    await source._pin({"tp0"}, since_ms)  # type: ignore[arg-type]
    assert log.seeks == {"tp0": 5}  # the first record after the start, none before
    assert log.commits == [{"tp0": 5}]


# --- incidents: the feed stores incident changes, then offers the notified ones ---


class IncidentStore:
    """What the feed's IncidentLog needs of Storage: documents kept in order."""

    def __init__(self, stored: Sequence[Any] = ()) -> None:
        self.docs: dict[str, Any] = {}
        self.writes: list[list[str]] = []
        self.stored = list(stored)

    def incident_item(self, change: Any, *, processed_at: int) -> Any:
        return change

    async def write(self, items: Sequence[Any], *, ordered: bool = False) -> None:
        self.writes.append([f"{c.kind.value}/{c.incident.version}" for c in items])
        for c in items:
            self.docs[c.incident.incident_id] = c

    async def load_incidents(self, *, since_ms: int, stop: Any = None) -> list[Any]:
        return self.stored

    async def load_alerts(self, *, since_ms: int, stop: Any = None) -> list[Alert]:
        return []


def door(rule: str, severity: Severity, version: int = 1) -> AlertChange:
    status = AlertStatus.OPEN if version == 1 else AlertStatus.RESOLVED
    alert = Alert(f"d1.{rule}.1", "d1", "s1", rule, severity, status, version, 1, 1 + version)
    return AlertChange(ChangeKind.OPENED if version == 1 else ChangeKind.RESOLVED, alert)


def incident_feed(
    webhook: Gate, clock: Clock, tp: TP, store: IncidentStore, metrics: Metrics | None = None
) -> AlertFeed:
    from cloud_processor.incidentlog import IncidentLog
    from cloud_processor.incidents import IncidentBook, IncidentSettings

    book = IncidentBook(IncidentSettings(resolve_grace_s=0))
    log = IncidentLog(book, store, clock=lambda: 0.0, metrics=metrics)  # type: ignore[arg-type]
    dispatcher = NotificationDispatcher(webhook, hook(coalesce_s=0), clock=clock)
    return AlertFeed(
        FakeSource(tp), dispatcher, commit_interval_s=3600, incidents=log, metrics=metrics
    )


async def test_incident_changes_are_stored_then_notified_and_resolve_their_offsets() -> None:
    clock, tp, webhook, store, metrics = (
        Clock(),
        TP(),
        Gate(open_=False),
        IncidentStore(),
        Metrics(),
    )
    feed = incident_feed(webhook, clock, tp, store, metrics)
    rules = ("edge_anomaly", "fleet_outlier", "threshold_high", "rate_of_change")
    sev = (Severity.WARNING, Severity.WARNING, Severity.CRITICAL, Severity.WARNING)
    opened = [door(r, s) for r, s in zip(rules, sev, strict=True)]
    await feed.handle_incidents({tp: records(opened)})
    # every incident change is stored before anything is offered
    assert store.writes == [["opened/1", "updated/2", "escalated/3", "updated/4"]]
    assert feed.book.committable() == {tp: 0}  # opened and escalated wait for the webhook
    webhook.gate.set()
    await asyncio.wait_for(feed.dispatcher.settled(), 5)
    assert [c.kind.value for c in webhook.got] == ["opened", "escalated"]
    assert feed.book.committable() == {tp: 4}
    resolved = [door(r, s, version=2) for r, s in zip(rules, sev, strict=True)]
    await feed.handle_incidents({tp: records(resolved, first=4)})
    await feed._settle([(None, feed.incidents.expire())])  # type: ignore[union-attr]
    await asyncio.wait_for(feed.dispatcher.settled(), 5)
    assert [c.kind.value for c in webhook.got] == ["opened", "escalated", "resolved"]
    (doc,) = store.docs.values()
    assert doc.incident.notified == ("opened", "escalated", "resolved")
    assert feed.book.committable() == {tp: 8}
    value = metrics.registry.get_sample_value
    p = "thermowatch_processor_"
    offered = {
        k: value(p + "incident_notifications_total", {"change": k})
        for k in ("opened", "escalated", "resolved")
    }
    assert offered == {"opened": 1.0, "escalated": 1.0, "resolved": 1.0}
    assert value(p + "incident_changes_total", {"change": "updated"}) == 6.0  # stored only
    assert value(p + "open_incidents") == 0.0
    await feed.dispatcher.close()


async def one_incident_then_a_restart() -> tuple[Gate, Gate, AlertFeed, Any]:
    """A feed notifies one incident and stops; another is built on what it stored.
    Returns (first webhook, second webhook, the restarted feed, its partition)."""
    clock, tp, webhook, first = Clock(), TP(), Gate(), IncidentStore()
    feed = incident_feed(webhook, clock, tp, first)
    await feed.handle_incidents({tp: records([door("threshold_high", Severity.CRITICAL)])})
    await asyncio.wait_for(feed.dispatcher.settled(), 5)
    await feed.dispatcher.close()
    again = Gate()
    return (
        webhook,
        again,
        incident_feed(again, clock, tp, IncidentStore(list(first.docs.values()))),
        tp,
    )


def same_incidents(a: Gate, b: Gate) -> bool:
    return [(c.incident.incident_id, c.incident.version) for c in a.got] == [
        (c.incident.incident_id, c.incident.version) for c in b.got
    ]


async def test_a_restart_offers_the_latest_news_again_for_the_receiver_to_drop() -> None:
    webhook, again, restarted, _tp = await one_incident_then_a_restart()
    await restarted.start()
    await asyncio.wait_for(restarted.dispatcher.settled(), 5)
    assert same_incidents(again, webhook)
    await restarted.close()


def test_incidents_are_kept_with_no_webhook_and_then_nothing_is_offered() -> None:
    from cloud_processor.config import IncidentSettings
    from cloud_processor.factory import make_storage

    cfg = ProcessorConfig()
    notifiers = default_notifiers(cfg, FakeProducer(), Metrics(), storage=make_storage(cfg))
    feed = notifiers[-1]
    assert isinstance(feed, AlertFeed) and feed.incidents is not None
    assert not feed.deliver and feed.notify_incidents
    off = ProcessorConfig(incidents=IncidentSettings(enabled=False), webhook=hook())
    (_topic, alerts) = default_notifiers(off, FakeProducer(), Metrics(), storage=make_storage(off))
    assert isinstance(alerts, AlertFeed) and alerts.incidents is None
    assert not alerts.notify_incidents and alerts.deliver  # every alert change, as before


# --- Kafka away while the feed joins its group (the processor waits it out) ---


class RefusingSource(FakeSource):
    """The alerts group's source while Kafka is away: its first ``refusals`` starts fail."""

    def __init__(self, refusals: int, *partitions: Any) -> None:
        super().__init__(*partitions)
        self.refusals = refusals
        self.starts = 0
        self.stops = 0

    async def start(self, on_revoked: Any, on_assigned: Any) -> None:
        self.starts += 1
        if self.starts <= self.refusals:
            from aiokafka.errors import KafkaConnectionError

            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9)]")
        await super().start(on_revoked, on_assigned)

    async def stop(self) -> None:
        self.stops += 1
        await super().stop()


async def test_the_processor_waits_out_a_kafka_that_is_away_while_the_feed_joins(
    caplog: Any,
) -> None:
    """Kafka killed just as the processor starts its webhook feed: the processor
    retries like it does for its producer and consumer, it does not exit."""
    from cloud_processor.app import Processor
    from cloud_processor.config import SearchSettings
    from cloud_processor.testing import FakeStore

    feed_source = RefusingSource(2, TP())
    dispatcher = NotificationDispatcher(Gate(), hook(), clock=Clock())
    feed = AlertFeed(feed_source, dispatcher, commit_interval_s=3600)
    config = ProcessorConfig(
        kafka=KafkaSettings(topic_prefix="t"),
        search=SearchSettings(retry_initial_s=0.01, retry_max_s=0.02),
    )
    p = Processor(
        config,
        source=FakeSource(),
        producer=FakeProducer(),
        storage=FakeStore(),
        notifiers=[feed],
    )
    caplog.set_level("WARNING", logger="cloud_processor.app")
    await asyncio.wait_for(p.start(), 10)
    assert (feed_source.starts, feed_source.stops, feed_source.started) == (3, 2, True)
    retries = [r.getMessage() for r in caplog.records if "event=kafka_retry" in r.getMessage()]
    assert len(retries) == 2 and all("op=feed" in m for m in retries), retries
    await p.close()


async def test_a_feed_start_that_failed_starts_afresh_and_offers_the_incidents_once() -> None:
    webhook, again, restarted, tp = await one_incident_then_a_restart()
    source = restarted.source = RefusingSource(1, tp)
    try:
        await restarted.start()
    except Exception as exc:
        assert type(exc).__name__ == "KafkaConnectionError"
    else:
        raise AssertionError("the first start should have failed")
    assert source.stops == 1  # the half-started consumer is let go
    await restarted.start()
    assert source.started
    await asyncio.wait_for(restarted.dispatcher.settled(), 5)
    assert same_incidents(again, webhook)
    await restarted.close()

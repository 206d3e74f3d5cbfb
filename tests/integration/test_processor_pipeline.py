"""The processor end to end with the real Kafka and search server.

Golden and crafted records go into private topics; the processor stores them,
raises and resolves alerts, notifies a local webhook receiver and publishes
alert changes to Kafka. Replaying the same records stores nothing twice and
notifies nothing twice.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from cloud_processor.app import Processor
from cloud_processor.config import (
    AlertSettings,
    HttpSettings,
    IncidentSettings,
    KafkaSettings,
    ProcessorConfig,
    RuleGroup,
    RulesConfig,
    SearchSettings,
    WebhookSettings,
)
from cloud_processor.documents import reading_doc, reading_id
from cloud_processor.factory import build_processor, default_notifiers
from cloud_processor.feed import AlertFeed
from cloud_processor.metrics import Metrics
from cloud_processor.testing import FakeProducer, WebhookReceiver
from stagekit.kafka import KafkaTarget, connection_keys, create_topics, delete_topics, settings_for
from stagekit.search import api as search
from stagekit.search.api import SearchError
from stagekit.search.indices import INDEXES, IndexNames
from telemetry_contract import (
    Alert,
    AlertChange,
    AlertState,
    AlertStatus,
    ChangeKind,
    DeviceStatus,
    EdgeAlert,
    EdgeAlertKind,
    Gap,
    KafkaTopics,
    Message,
    Reading,
    Severity,
    decode,
    encode,
    encode_alert_change,
    kafka_key,
    kafka_topics,
)
from testsupport.search import admin_backend

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "messages" / "valid"


async def wait_for(check: Callable[[], Awaitable[bool]], within: float = 90.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"condition not met within {within} s")


def topic_for(msg: Message, topics: KafkaTopics) -> str:
    if isinstance(msg, (Reading, Gap)):
        return topics.telemetry
    if isinstance(msg, EdgeAlert):
        return topics.edge_alerts
    assert isinstance(msg, DeviceStatus)
    return topics.status


async def produce(kafka: KafkaTarget, topics: KafkaTopics, messages: list[Message]) -> None:
    producer = AIOKafkaProducer(**settings_for(kafka).client_options(), acks="all", linger_ms=5)
    await producer.start()
    try:
        await send_all(producer, topics, messages)
    finally:
        await producer.stop()


async def send_all(
    producer: AIOKafkaProducer, topics: KafkaTopics, messages: list[Message]
) -> None:
    futures = [
        await producer.send(
            topic_for(m, topics),
            encode(m),
            key=kafka_key(m.device_id),  # type: ignore[union-attr]
        )
        for m in messages
    ]
    await asyncio.gather(*futures)


class Env:
    """One test's private topics, indices and search client."""

    def __init__(self, stack: dict[str, Any]) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:8]}"
        self.topics = kafka_topics(self.prefix)
        self.kafka = stack["kafka"]
        self.search = stack["search"]
        self.names = IndexNames(f"{self.prefix}-")
        self.backend = admin_backend(self.search)

    def config(
        self,
        *,
        group: str = "g",
        webhook: str = "",
        search_url: str = "",
        rules: RulesConfig | None = None,
        notify: Literal["incidents", "alerts"] = "alerts",
    ) -> ProcessorConfig:
        return ProcessorConfig(
            kafka=KafkaSettings(
                **connection_keys(self.kafka, "processor"),
                topic_prefix=self.prefix,
                group_id=f"{self.prefix}-{group}",
                client_id=f"{self.prefix}-{group}",
                commit_interval_s=0.5,
                poll_timeout_ms=200,
                max_batch=500,
                session_timeout_ms=10_000,
            ),
            search=SearchSettings.from_endpoint(
                self.search,
                "admin",
                **({"url": search_url} if search_url else {}),
                index_prefix=self.names.prefix,
                refresh_interval="1s",
                retry_initial_s=0.2,
                retry_max_s=2.0,
                timeout_s=10.0,
            ),
            rules=rules or RulesConfig(threshold_high_c=8.0, hysteresis_c=1.0, min_duration_s=0),
            alerts=AlertSettings(max_event_age_s=900),
            webhook=WebhookSettings(
                url=webhook,
                notify=notify,  # these tests follow alert changes, but for the incidents one
                rate_per_s=50,
                burst=50,
                backoff_initial_s=0.1,
                max_attempts=10,
                # these tests follow every change: no coalescing, no per-device limit
                coalesce_s=0.0,
                device_rate_per_s=50,
                device_burst=50,
            ),
            http=HttpSettings(enabled=False),
        )

    async def count(self, pattern: str, query: dict[str, Any] | None = None) -> int:
        await self.backend.perform(search.refresh(pattern))
        body: dict[str, Any] = {"size": 0, "track_total_hits": True}
        if query:
            body["query"] = query
        answer = await self.backend.perform(search.search(pattern, body))
        return int(answer["hits"]["total"]["value"])

    async def docs(self, pattern: str, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        await self.backend.perform(search.refresh(pattern))
        body: dict[str, Any] = {"size": 10_000, "query": query or {"match_all": {}}}
        answer = await self.backend.perform(search.search(pattern, body))
        return [h["_source"] for h in answer["hits"]["hits"]]

    async def close(self) -> None:
        for pattern in (f"{self.names.prefix}*",):
            with suppress(SearchError):
                await self.backend.perform(search.delete_index(pattern))
        for spec in INDEXES:
            with suppress(SearchError):
                await self.backend.perform(
                    search.Request("DELETE", f"/_index_template/{self.names.base(spec)}")
                )
        await self.backend.close()


@pytest.fixture
async def env(stack: dict[str, Any]) -> AsyncIterator[Env]:
    e = Env(stack)
    await create_topics(
        e.kafka,
        [
            e.topics.telemetry,
            e.topics.edge_alerts,
            e.topics.status,
            e.topics.alerts,
            e.topics.deadletter,
        ],
        partitions=3,
    )
    yield e
    await e.close()
    await delete_topics(e.kafka, e.topics.all())


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    r = WebhookReceiver()
    await r.start()
    yield r
    await r.close()


@asynccontextmanager
async def running(cfg: ProcessorConfig) -> AsyncIterator[Processor]:
    processor = build_processor(cfg)
    await processor.start()
    stop = asyncio.Event()
    task = asyncio.create_task(processor.run(stop))
    try:
        yield processor
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 60)
        finally:
            await processor.close()


def golden() -> list[Message]:
    out = []
    for path in sorted(FIXTURES.glob("*.json")):
        msg = decode(path.read_bytes(), now_ms=1_767_225_700_000)
        if isinstance(msg, (Reading, Gap, EdgeAlert, DeviceStatus)):
            out.append(msg)
    return out


def live_sequence(device: str, start_ms: int, temps: list[float]) -> list[Reading]:
    return [
        Reading(
            device_id=device,
            sensor_id="host",
            site="live",
            seq=i + 1,
            ts=start_ms + i * 1000,
            temp_c=t,
        )
        for i, t in enumerate(temps)
    ]


async def alert_topic_records(
    env: Env, expected: int, within: float = 30.0
) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        env.topics.alerts,
        **settings_for(env.kafka).client_options(),
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + within
        while len(out) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out += [json.loads(r.value) for r in records]
    finally:
        await consumer.stop()
    return out


async def test_pipeline_documents_alerts_windows_and_replay(
    env: Env, receiver: WebhookReceiver
) -> None:
    now = int(time.time() * 1000)
    start = now - 120_000
    live = live_sequence("live-1", start, [4.0] * 5 + [9.0] * 5 + [4.0] * 5)
    old = golden()
    messages: list[Message] = [*old, *live]
    readings = [m for m in messages if isinstance(m, Reading)]
    await produce(env.kafka, env.topics, messages)

    async with running(env.config(webhook=receiver.url)) as p:
        await wait_for(lambda: _ge(env.count(env.names.readings_pattern), len(readings)))
        await wait_for(lambda: _ge(_len(receiver.received), 2))
        await wait_for(lambda: _ge(env.count(env.names.aggregates_pattern), 1))
        await asyncio.sleep(2)  # let a commit and a window flush happen

    # every reading stored once, exactly as built
    assert await env.count(env.names.readings_pattern) == len(readings)
    for r in readings:
        got = await env.backend.perform(search.get_doc(env.names.readings_for(r.ts), reading_id(r)))
        assert got["_source"] == reading_doc(r)

    # the live threshold alert: opened then resolved, notified once each, in order
    alert_id = f"live-1.threshold_high.{start + 5000}"
    hooks = [(h["alert_id"], h["change"], h["version"]) for h in receiver.received]
    assert hooks == [(alert_id, "opened", 1), (alert_id, "resolved", 2)]
    (doc,) = await env.docs(env.names.alerts, {"term": {"alert_id": alert_id}})
    assert doc["status"] == "resolved" and doc["version"] == 2 and doc["late"] is False
    assert doc["resolved_at"] == start + 10_000

    # the golden backlog (January 2026) is recorded as late alerts, never notified
    late = await env.docs(env.names.alerts, {"term": {"late": True}})
    assert {d["rule"] for d in late} >= {"data_gap", "device_offline", "edge_anomaly"}
    assert all(h["alert_id"] != d["alert_id"] for d in late for h in receiver.received)

    # alert changes are on the Kafka alerts topic too, late ones included
    total_changes = int(
        sum(v for k, v in _samples(p, "thermowatch_processor_alerts_total").items())
    )
    published = await alert_topic_records(env, total_changes)
    assert len(published) == total_changes
    assert [(r["change"], r["version"]) for r in published if r["alert_id"] == alert_id] == [
        ("opened", 1),
        ("resolved", 2),
    ]

    # one-minute windows of the live device add up to its readings
    windows = await env.docs(env.names.aggregates_pattern, {"term": {"device_id": "live-1"}})
    assert sum(w["count"] for w in windows) == len(live)
    assert max(w["temp_max"] for w in windows) == 9.0
    assert min(w["temp_min"] for w in windows) == 4.0

    # replay the same Kafka records with a fresh consumer group: nothing new anywhere
    before_alerts = await env.docs(env.names.alerts)
    async with running(env.config(group="replay", webhook=receiver.url)) as p2:
        await wait_for(lambda: _ge(_dup(p2), len(readings)))
    assert await env.count(env.names.readings_pattern) == len(readings)
    assert len(receiver.received) == 2
    after_alerts = await env.docs(env.names.alerts)
    key = lambda d: d["alert_id"]  # noqa: E731
    assert sorted(after_alerts, key=key) == sorted(before_alerts, key=key)
    # nothing re-published by the replay (waits a few seconds for a surplus)
    assert len(await alert_topic_records(env, total_changes + 1, within=5)) == total_changes


async def test_offsets_committed_only_up_to_what_is_stored(env: Env) -> None:
    now = int(time.time() * 1000)
    live = live_sequence("c-1", now - 60_000, [5.0] * 40)
    await produce(env.kafka, env.topics, list(live))
    cfg = env.config(group="commit")
    async with running(cfg):
        await wait_for(lambda: _ge(env.count(env.names.readings_pattern), len(live)))
    consumer = AIOKafkaConsumer(
        **settings_for(env.kafka).client_options(),
        group_id=cfg.kafka.group_id,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(env.topics.telemetry, p) for p in range(3)]
        ends = await consumer.end_offsets(tps)
        committed = {tp: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()
    assert {tp: committed[tp] or 0 for tp in tps} == ends


async def _ge(value: Awaitable[int], target: int) -> bool:
    return (await value) >= target


async def _len(items: list[Any]) -> int:
    return len(items)


def _samples(p: Processor, name: str) -> dict[str, float]:
    out = {}
    for metric in p.metrics.registry.collect():
        for s in metric.samples:
            if s.name == name:
                out[json.dumps(s.labels, sort_keys=True)] = s.value
    return out


async def _dup(p: Processor) -> int:
    return int(
        sum(
            v
            for k, v in _samples(p, "thermowatch_processor_documents_total").items()
            if '"duplicate"' in k and '"readings"' in k
        )
    )


async def test_two_processors_split_partitions_and_rebalance_cleanly(env: Env) -> None:
    now = int(time.time() * 1000)
    devices = [f"r-{i}" for i in range(6)]
    first = [r for d in devices for r in live_sequence(d, now - 200_000, [5.0] * 30)]
    second = [
        Reading(
            device_id=r.device_id,
            sensor_id="host",
            site="live",
            seq=r.seq + 30,
            ts=r.ts + 30_000,
            temp_c=5.0,
        )
        for r in first
    ]
    await produce(env.kafka, env.topics, list(first))
    cfg = env.config(group="split")
    async with running(cfg) as p1:
        await wait_for(lambda: _ge(env.count(env.names.readings_pattern), len(first)))
        async with running(cfg) as p2:  # joins: p1's partitions are revoked and re-split
            await wait_for(lambda: _true(bool(p2.source.assignment())))
            await produce(env.kafka, env.topics, list(second))
            await wait_for(
                lambda: _ge(env.count(env.names.readings_pattern), len(first) + len(second))
            )
            await asyncio.sleep(1.5)
            assert p1.source.assignment() and p2.source.assignment()
            assert not (
                {tp for tp in p1.source.assignment()} & {tp for tp in p2.source.assignment()}
            )
            # Co-partitioned: each member has the same partition numbers of the
            # telemetry, status and edge-alert topics (the range assignor) ...
            for p in (p1, p2):
                numbers = {
                    topic: {tp.partition for tp in p.source.assignment() if tp.topic == topic}
                    for topic in (env.topics.telemetry, env.topics.status, env.topics.edge_alerts)
                }
                assert len({frozenset(n) for n in numbers.values()}) == 1, numbers
            # ... each device is one member's, and p1 let go of the devices it
            # judged before p2 joined that are p2's now (no stale alert from it).
            owns1, owns2 = p1.source.owner(), p2.source.owner()
            assert all(owns1(d) != owns2(d) for d in devices)
            assert p1.rules.device_count == sum(map(owns1, devices))
            assert p2.rules.device_count == sum(map(owns2, devices))
            dups = await _dup(p1) + await _dup(p2)
        assert dups == 0  # commit on revoke: the new owner starts after what was stored
    assert await env.count(env.names.readings_pattern) == len(first) + len(second)


async def _true(value: bool) -> bool:
    return value


async def test_replay_from_timestamp_stops_when_caught_up_and_adds_nothing(
    env: Env, receiver: WebhookReceiver
) -> None:
    now = int(time.time() * 1000)
    start = now - 60_000
    live = live_sequence("p-1", start, [4.0] * 5 + [9.0] * 5 + [4.0] * 5)
    await produce(env.kafka, env.topics, list(live[:7]))
    await asyncio.sleep(1.0)
    middle = int(time.time() * 1000)  # --from is Kafka record time (when produced)
    await asyncio.sleep(0.1)
    await produce(env.kafka, env.topics, list(live[7:]))
    async with running(env.config(group="first", webhook=receiver.url)):
        await wait_for(lambda: _ge(_len(receiver.received), 2))
        await asyncio.sleep(1)
    replay = build_processor(
        env.config(group="unused", webhook=receiver.url), replay_from_ms=middle
    )
    await replay.start()
    try:
        await asyncio.wait_for(replay.run(), 60)  # returns by itself at the end offsets
    finally:
        await replay.close()
    consumed = sum(v for k, v in _samples(replay, "thermowatch_processor_records_total").items())
    assert consumed == len(live) - 7  # only the records from the timestamp on
    assert await env.count(env.names.readings_pattern) == len(live)
    assert len(receiver.received) == 2  # nothing notified again


async def test_each_rule_opens_updates_and_resolves_through_kafka(
    env: Env, receiver: WebhookReceiver
) -> None:
    from telemetry_contract import (
        AlertState,
        DeviceState,
        EdgeAlertKind,
        GapReason,
        Quality,
        Severity,
    )

    t0 = int(time.time() * 1000) - 240_000

    def rd(dev: str, seq: int, t_s: float, temp: float | None, q: Quality = Quality.OK) -> Reading:
        return Reading(
            device_id=dev,
            sensor_id="host",
            site=f"site-{dev}",  # alone in its site: no fleet-outlier side effects
            seq=seq,
            ts=t0 + int(t_s * 1000),
            temp_c=temp,
            quality=q,
        )

    msgs: list[Message] = []
    # threshold with hysteresis: open, escalate (update), band, resolve
    for i, v in enumerate([4.0, 9.0, 12.5, 9.0, 7.5, 6.5]):
        msgs.append(rd("h-1", i + 1, i * 10, v))
    # flapping: three openings, then held open until calm for flap_hold_s
    flap = [9.0, 6.0, 9.0, 6.0, 9.0, 6.0, 6.0, 6.0]
    for i, v in enumerate(flap):
        msgs.append(rd("f-1", i + 1, i * 5 if i < 6 else 25 + (i - 5) * 20, v))
    # device offline (last will) and back
    msgs.append(
        DeviceStatus(
            device_id="o-1", site="x", ts=t0 + 1000, state=DeviceState.OFFLINE, reason="last will"
        )
    )
    msgs.append(DeviceStatus(device_id="o-1", site="x", ts=t0 + 60_000, state=DeviceState.ONLINE))
    # edge anomaly raised and cleared
    for st, t in ((AlertState.RAISED, 2), (AlertState.CLEARED, 50)):
        msgs.append(
            EdgeAlert(
                device_id="e-1",
                site="x",
                alert_id="e-1.anomaly.1",
                ts=t0 + t * 1000,
                kind=EdgeAlertKind.ANOMALY,
                state=st,
                severity=Severity.WARNING,
                message="score 0.9",
            )
        )
    # data gap, then a reading after it
    msgs.append(
        Gap(
            device_id="g-1",
            site="x",
            ts=t0 + 3000,
            first_seq=1,
            last_seq=9,
            reason=GapReason.OUTBOX_FULL,
        )
    )
    msgs.append(rd("g-1", 10, 4, 5.0))
    # sensor-fault storm: three CRC errors, then clean readings past the window
    for i in range(3):
        msgs.append(rd("s-1", i + 1, i, None, Quality.CRC_ERROR))
    msgs.append(rd("s-1", 4, 5, 5.0))
    msgs.append(rd("s-1", 5, 20, 5.0))
    # rate of change (only device r-1 has the rule): +4 °C in 40 s, then flat
    rate = [(0, 1.0), (10, 1.0), (20, 1.0), (40, 5.0), (80, 5.0), (100, 5.0), (110, 5.0)]
    for i, (t, v) in enumerate(rate):
        msgs.append(rd("r-1", i + 1, t, v))
    await produce(env.kafka, env.topics, msgs)
    # fleet outlier among five peers of site y; the rule judges each site once
    # per batch on its devices' latest readings, so the rounds arrive apart
    rounds = [[4.0, 4.2, 3.9, 4.1, 4.0], [4.0, 4.2, 3.9, 4.1, 7.5], [4.0, 4.2, 3.9, 4.1, 4.0]]
    y_rounds: list[list[Message]] = []
    for i, temps in enumerate(rounds):
        y_rounds.append([])
        for d, v in enumerate(temps):
            y_rounds[-1].append(
                Reading(
                    device_id=f"y-{d + 1}",
                    sensor_id="host",
                    site="y",
                    seq=i + 1,
                    ts=t0 + i * 15_000 + d,
                    temp_c=v,
                )
            )

    cfg = env.config(
        webhook=receiver.url,
        rules=RulesConfig(
            threshold_high_c=8.0,
            critical_high_c=12.0,
            hysteresis_c=1.0,
            min_duration_s=0,
            fault_storm_count=3,
            fault_storm_window_s=10,
            stale_after_s=3600,
            groups={"rate": RuleGroup(devices=["r-1"], rate_max_c_per_min=2.0)},
        ),
    )
    cfg = msgspec.structs.replace(
        cfg, alerts=AlertSettings(max_event_age_s=900, flap_max_opens=3, flap_hold_s=30)
    )
    expected = {
        "h-1.threshold_high": ["opened", "updated", "updated", "resolved"],
        "f-1.threshold_high": [
            "opened",
            "resolved",
            "opened",
            "resolved",
            "opened",
            "updated",
            "resolved",
        ],
        "o-1.device_offline": ["opened", "resolved"],
        "e-1.edge_anomaly": ["opened", "resolved"],
        "g-1.data_gap": ["opened", "resolved"],
        "s-1.sensor_fault_storm": ["opened", "resolved"],
        "r-1.rate_of_change": ["opened", "resolved"],
        "y-5.fleet_outlier": ["opened", "resolved"],
    }
    total = sum(len(v) for v in expected.values())
    async with running(cfg):
        y_query = {"term": {"site": "y"}}
        for n, batch in enumerate(y_rounds, start=1):
            await produce(env.kafka, env.topics, batch)
            await wait_for(lambda n=n: _ge(env.count(env.names.readings_pattern, y_query), 5 * n))
        await wait_for(lambda: _ge(_len(receiver.received), total), 60)
        await asyncio.sleep(1)
    got: dict[str, list[str]] = {}
    for h in receiver.received:
        key = h["alert_id"].rsplit(".", 1)[0]
        got.setdefault(key, []).append(h["change"])
        # versions strictly increase per alert: each change once, in order
    per_alert: dict[str, list[int]] = {}
    for h in receiver.received:
        per_alert.setdefault(h["alert_id"], []).append(h["version"])
    assert got == expected
    assert all(v == list(range(1, len(v) + 1)) for v in per_alert.values())
    h1 = [h for h in receiver.received if h["alert_id"].startswith("h-1")]
    assert [h["severity"] for h in h1] == ["warning", "critical", "warning", "warning"]
    flapping = [h for h in receiver.received if h["alert_id"].startswith("f-1")][-2:]
    assert [h["flapping"] for h in flapping] == [True, True]
    docs = await env.docs(env.names.alerts)
    assert len(docs) == len(per_alert)
    assert all(d["status"] == "resolved" for d in docs)


async def test_record_breaking_the_contract_goes_to_the_dead_letter_topic(env: Env) -> None:
    now = int(time.time() * 1000)
    producer = AIOKafkaProducer(**settings_for(env.kafka).client_options(), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(env.topics.telemetry, b'{"type":"reading"', key=b"bad-1")
    finally:
        await producer.stop()
    good = live_sequence("bad-1", now - 10_000, [5.0])
    await produce(env.kafka, env.topics, list(good))
    async with running(env.config(group="dlq")):
        await wait_for(lambda: _ge(env.count(env.names.readings_pattern), 1))
    consumer = AIOKafkaConsumer(
        env.topics.deadletter,
        **settings_for(env.kafka).client_options(),
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    letters: list[Any] = []
    try:
        deadline = time.monotonic() + 30
        while not letters and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                letters += [decode(r.value) for r in records]
    finally:
        await consumer.stop()
    (letter,) = letters
    assert letter.reason == "not_json"
    assert letter.payload == '{"type":"reading"'
    assert letter.source_topic == env.topics.telemetry


async def _produce_changes(env: Env, changes: list[AlertChange]) -> None:
    producer = AIOKafkaProducer(**settings_for(env.kafka).client_options(), acks="all")
    await producer.start()
    try:
        for c in changes:
            await producer.send_and_wait(
                env.topics.alerts, encode_alert_change(c), key=kafka_key(c.alert.device_id)
            )
    finally:
        await producer.stop()


def _change(device: str, version: int = 1) -> AlertChange:
    alert = Alert(
        f"{device}.threshold_high.1",
        device,
        "s1",
        "threshold_high",
        Severity.WARNING,
        AlertStatus.OPEN,
        version,
        1,
        1,
    )
    return AlertChange(ChangeKind.OPENED if version == 1 else ChangeKind.UPDATED, alert)


async def test_webhook_feed_skips_history_when_new_and_resumes_from_its_commit(
    env: Env, receiver: WebhookReceiver
) -> None:
    """The webhook's feed (its own group on the alerts topic): a new group starts
    at what is produced after it started, not at the topic's history; restarted,
    it resumes at its commit, so what was produced while it was down arrives and
    nothing delivered before comes again."""
    cfg = env.config(group="feed", webhook=receiver.url)

    def feed() -> AlertFeed:
        notifiers = default_notifiers(cfg, FakeProducer(), Metrics())
        assert isinstance(notifiers[-1], AlertFeed)
        return notifiers[-1]

    await _produce_changes(env, [_change(f"old-{i}") for i in range(3)])
    first = feed()
    await first.start()
    try:
        await wait_for(lambda: _true(bool(first.source.assignment())))
        await _produce_changes(env, [_change(f"new-{i}") for i in range(3)])
        await wait_for(lambda: _ge(_len(receiver.received), 3))
    finally:
        await first.close()
    await _produce_changes(env, [_change(f"new-{i}", 2) for i in range(3)])  # while down
    second = feed()
    await second.start()
    try:
        await wait_for(lambda: _ge(_len(receiver.received), 6))
        await asyncio.sleep(2)  # a surplus (history, repeats) would arrive meanwhile
    finally:
        await second.close()
    got = sorted((h["device_id"], h["version"]) for h in receiver.received)
    assert got == sorted((f"new-{i}", v) for i in range(3) for v in (1, 2))


async def test_a_door_left_open_is_one_incident_notified_at_most_three_times(
    env: Env, receiver: WebhookReceiver
) -> None:
    """One device's door left open raises edge_anomaly, threshold_high,
    fleet_outlier and rate_of_change: the webhook gets one incident, opened,
    escalated once (the temperature crosses the critical limit) and resolved;
    the alert documents stay, the incidents index holds the incident."""
    start = int(time.time() * 1000) - 400_000
    devices = [f"door-{i}" for i in range(6)]

    def temp(device: str, t: int) -> float:
        if device != "door-0" or t < 60 or t >= 180:
            return 4.0
        return min(4.0 + (t - 55) / 5, 14.0)  # +12 °C/min up to 14 °C, then the door shuts

    steps: list[list[Message]] = []
    edge = {65: "raised", 200: "cleared"}
    for n, t in enumerate(range(0, 300, 5)):
        step: list[Message] = [
            Reading(
                device_id=d,
                sensor_id="host",
                site="door",
                seq=n + 1,
                ts=start + t * 1000,
                temp_c=temp(d, t),
            )
            for d in devices
        ]
        if t in edge:
            step.append(
                EdgeAlert(
                    device_id="door-0",
                    site="door",
                    alert_id="door-0.anomaly.1",
                    ts=start + t * 1000,
                    kind=EdgeAlertKind.ANOMALY,
                    state=AlertState(edge[t]),
                    message="anomaly score 0.97",
                )
            )
        steps.append(step)
    cfg = env.config(
        webhook=receiver.url,
        notify="incidents",
        rules=RulesConfig(
            threshold_high_c=8.0,
            critical_high_c=12.0,
            hysteresis_c=1.0,
            min_duration_s=0,
            rate_max_c_per_min=6.0,
            rate_window_s=30.0,
            stale_after_s=3600,
        ),
    )
    cfg = msgspec.structs.replace(
        cfg,
        alerts=AlertSettings(max_event_age_s=900, allowed_lateness_s=900),
        incidents=IncidentSettings(resolve_grace_s=30),
    )

    def resolved() -> Awaitable[bool]:
        return _true(any(h.get("change") == "resolved" for h in receiver.received))

    producer = AIOKafkaProducer(**settings_for(env.kafka).client_options(), acks="all", linger_ms=5)
    await producer.start()
    try:
        async with running(cfg):
            # Step by step, as devices send: the fleet outlier is judged per batch.
            for step in steps:
                await send_all(producer, env.topics, step)
                await asyncio.sleep(0.05)
            await wait_for(resolved, within=30)
            await asyncio.sleep(1)  # a surplus notification would arrive meanwhile
    finally:
        await producer.stop()

    rules = {"edge_anomaly", "threshold_high", "fleet_outlier", "rate_of_change"}
    alerts = await env.docs(env.names.alerts, {"term": {"device_id": "door-0"}})
    assert {a["rule"] for a in alerts} >= rules  # the alert documents stay
    assert {h["type"] for h in receiver.received} == {"incident_change"}
    assert len({h["incident_id"] for h in receiver.received}) == 1
    kinds = [h["change"] for h in receiver.received]
    assert kinds in (["opened", "escalated", "resolved"], ["opened", "resolved"])
    assert ("escalated" in kinds) == (receiver.received[0]["severity"] != "critical")
    assert len({(h["incident_id"], h["version"]) for h in receiver.received}) == len(kinds)
    (doc,) = await env.docs(env.names.incidents)
    assert doc["incident_id"] == receiver.received[0]["incident_id"]
    assert (doc["status"], doc["severity"], doc["scope"]) == ("resolved", "critical", "device")
    assert set(doc["rules"]) >= rules and doc["notified"] == kinds

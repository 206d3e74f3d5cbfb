"""One hostile device cannot stall, crash or flood the pipeline for the fleet.

Real Mosquitto, gateway, Kafka, processor, OpenSearch and web view (the last
three stages as subprocesses of the run's own configs). One device, holding a
valid credential, publishes 5,000 messages of every hostile class of
:mod:`tests.integration.hostile_fleet` (and 20 MiB publishes, and an edge-alert storm)
while 30 other devices publish normally; the same classes are also written
straight into the telemetry topic, as a rogue or older gateway would. Then:

* every reading of the normal devices is stored exactly once;
* every hostile MQTT message is dead-lettered (or refused by the broker);
  every hostile Kafka record is dead-lettered by the processor, which commits
  past it;
* the gateway's in-flight window was never exhausted;
* no stage restarted, and the web view still shows the fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.local.mqtt_auth import client_id_for
from deploy.local.pki import client_tls
from deploy.local.stack import free_port
from stagekit.kafka import connection_keys, settings_for
from testsupport.search import admin_login, admin_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PER_CLASS = 5_000
KAFKA_PER_CLASS = 200
NORMAL_DEVICES = 30
HUGE_PUBLISHES = 3
#: Hostile messages per second: well below what the gateway dead-letters, so a
#: full in-flight window would mean messages held, not a backlog. On two cores
#: shared with Kafka, OpenSearch and the processor, the gateway's Kafka writes
#: stall for up to a second now and then (a JVM pause, a busy core): at 1,000/s
#: that alone filled the window of 1,000 in some runs. A flood faster than the
#: gateway fills the window the way any heavy load does -- flow control working,
#: and the other devices still get through.
ATTACK_RATE = 500
#: Bytes of log a stage may write during the whole run.
LOG_BUDGET = 2 * 1024 * 1024
#: Seq offset of the hostile device's valid-but-old readings (apart from the others).
OLD_OFFSET = 10_000_000


def _mqtt_client(m: dict[str, Any], user: str, tag: str) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id_for(user, f"{tag}-{uuid.uuid4().hex[:4]}"),
        protocol=mqtt.MQTTv5,
    )
    tls = client_tls(m, user)  # TLS: a device's certificate, a service's password
    tls.apply(client)
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    client.connect(m["host"], tls.port)
    client.loop_start()
    return client


def _publish_all(client: Any, topic: str, payloads: Iterator[bytes]) -> int:
    """Publish QoS 1 at :data:`ATTACK_RATE`, then wait for every PUBACK; the number acknowledged."""
    infos = []
    t0 = time.monotonic()
    for n, p in enumerate(payloads, 1):
        infos.append(client.publish(topic, p, qos=1))
        if n % 100 == 0:
            time.sleep(max(0.0, t0 + n / ATTACK_RATE - time.monotonic()))
    for info in infos:
        info.wait_for_publish(timeout=120)
    return sum(1 for info in infos if info.is_published())


class _Normal(threading.Thread):
    """30 devices, one reading each every 100 ms, until stopped."""

    def __init__(self, m: dict[str, Any], sites: dict[str, list[str]], tag: str) -> None:
        super().__init__(daemon=True)
        self.client = _mqtt_client(m, "admin", tag)
        self.sites = sites
        self.sent: dict[str, int] = {}
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from telemetry_contract import Reading, TopicKind, encode, mqtt_topic

        try:
            infos = []
            seq = 0
            while not self.stop.is_set():
                seq += 1
                now = time.time_ns() // 1_000_000
                for site, devices in self.sites.items():
                    for dev in devices:
                        reading = Reading(
                            device_id=dev,
                            sensor_id="host",
                            site=site,
                            seq=seq,
                            ts=now,
                            temp_c=20.0 + (seq % 10) / 10,
                        )
                        topic = mqtt_topic(site, dev, TopicKind.TELEMETRY)
                        infos.append(self.client.publish(topic, encode(reading), qos=1))
                        self.sent[dev] = seq
                self.stop.wait(0.1)
            for info in infos:
                info.wait_for_publish(timeout=120)
            assert all(info.is_published() for info in infos)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.client.loop_stop()
            self.client.disconnect()


class _WindowWatch(threading.Thread):
    """Samples the gateway's /metrics: the largest in-flight count seen."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.max_in_flight = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            text = _get(self.url)
            value = _metric(text, "thermowatch_gateway_in_flight")
            if value is not None:
                self.max_in_flight = max(self.max_in_flight, value)
            self.stop.wait(0.05)


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def _wait_written(url: str, within: float) -> None:
    """Until the gateway has written to the telemetry, edge-alert and dead-letter topics."""
    wanted = (
        'thermowatch_gateway_forwarded_total{kind="telemetry"}',
        'thermowatch_gateway_forwarded_total{kind="alert"}',
        "thermowatch_gateway_deadlettered_total",
    )
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        text = _get(url)
        if all((_metric(text, name) or 0) > 0 for name in wanted):
            return
        time.sleep(0.2)
    raise AssertionError(f"the gateway wrote nothing to some topic within {within} s")


def _huge_publishes(m: dict[str, Any], user: str, topic: str, n: int) -> list[str]:
    """Publish ``n`` 20 MiB messages, each on a fresh connection; how each ended."""
    return [_huge_publish_once(m, user, topic) for _ in range(n)]


def _huge_publish_once(m: dict[str, Any], user: str, topic: str) -> str:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from tests.integration.hostile_fleet import huge_publish

    ended = threading.Event()
    how: list[str] = []

    def on_disconnect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        how.append(f"disconnected: {rc}")
        ended.set()

    def on_publish(_c: Any, _u: Any, _mid: Any, rc: Any, _p: Any = None) -> None:
        how.append(f"puback: {rc}")
        ended.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id_for(user, f"huge-{uuid.uuid4().hex[:4]}"),
        protocol=mqtt.MQTTv5,
    )
    tls = client_tls(m, user)  # TLS: a device's certificate, a service's password
    tls.apply(client)
    client.on_disconnect = on_disconnect
    client.on_publish = on_publish
    client.connect(m["host"], tls.port)
    client.loop_start()
    client.publish(topic, huge_publish(), qos=1)
    ended.wait(60)
    client.loop_stop()
    client.disconnect()
    return how[0] if how else "no answer"


def test_one_hostile_device_cannot_stall_crash_or_flood_the_fleet(
    local_stack: Any, tmp_path: Path
) -> None:
    from telemetry_contract import TopicKind, kafka_topics, mqtt_topic
    from tests.integration.hostile_fleet import (
        DEAD_LETTERED,
        HOSTILE_SEQ,
        STORED,
        Target,
        edge_alert_storm,
    )
    from thermowatch.accounting.search import fetch_stored
    from thermowatch.demo.configs import write_toml
    from thermowatch.demo.run import DemoRun
    from thermowatch.demo.services import Service, pipeline_services, wait_topics

    tag = uuid.uuid4().hex[:6]
    sites = {f"h{tag}{s}": [f"h{tag}{s}-d{d:02d}" for d in range(1, 11)] for s in "abc"}
    hostile_site = next(iter(sites))
    hostile = f"h{tag}a-evil"
    m = local_stack.endpoints()["mosquitto"]
    local_stack.add_mqtt_user(hostile)
    endpoints = local_stack.endpoints()
    m = endpoints["mosquitto"]
    run = DemoRun(
        run_id=f"hx{tag}",
        run_dir=tmp_path / "run",
        w1_dir=tmp_path / "w1" / "tree",
        sites={**sites, hostile_site: [*sites[hostile_site], hostile]},
        duration_s=0.0,
    )
    topics = kafka_topics(run.kafka_prefix)
    gw_port = free_port()
    web_port = free_port()
    gateway, processor = pipeline_services(
        run,
        endpoints,
        gateway_overrides={"http": {"host": "127.0.0.1", "port": gw_port}},
    )
    web_file = run.run_dir / "web.toml"
    write_toml(
        web_file,
        {
            "http": {"host": "127.0.0.1", "port": web_port},
            "search": {**admin_login(endpoints["search"]), "index_prefix": run.index_prefix},
            "kafka": {
                **connection_keys(endpoints["kafka"], "web"),
                "topic_prefix": run.kafka_prefix,
            },
        },
    )
    web = Service("web", "thermowatch.web", web_file, run.run_dir / "logs" / "web.log")
    services = (gateway, processor, web)
    target = Target(device_id=hostile, site=hostile_site, now_ms=time.time_ns() // 1_000_000)
    hostile_topic = mqtt_topic(hostile_site, hostile, TopicKind.TELEMETRY)
    alert_topic = mqtt_topic(hostile_site, hostile, TopicKind.ALERT)
    try:
        gateway.start()
        asyncio.run(wait_topics(run.kafka_settings(endpoints), topics.all(), gateway, 90.0))
        processor.start()
        web.start()
        pids = {svc.name: svc.pid for svc in services}
        watch = _WindowWatch(f"http://127.0.0.1:{gw_port}/metrics")
        watch.start()
        normal = _Normal(m, sites, tag)
        normal.start()

        attacker = _mqtt_client(m, hostile, tag)
        # Warm-up: one message to each Kafka topic the attack reaches. The first
        # write to a topic created a moment ago waits for its metadata (about a
        # second here), which at ATTACK_RATE would fill the window by itself.
        _publish_all(attacker, hostile_topic, iter([DEAD_LETTERED["surrogate_nan"](target, 0)]))
        _publish_all(attacker, alert_topic, iter([edge_alert_storm(target, -1)]))
        _wait_written(f"http://127.0.0.1:{gw_port}/metrics", within=60.0)

        # 1. Every dead-lettered class, 5,000 each, on the hostile device's own topic.
        sent: Counter[str] = Counter()
        for name, make in DEAD_LETTERED.items():
            sent[name] = _publish_all(
                attacker, hostile_topic, (make(target, i) for i in range(PER_CLASS))
            )
        # 2. Valid but hostile: readings stamped years ago, and an edge-alert storm.
        old = STORED["old_reading"]
        sent["old_reading"] = _publish_all(
            attacker, hostile_topic, (old(target, OLD_OFFSET + i) for i in range(PER_CLASS))
        )
        sent["alert_storm"] = _publish_all(
            attacker, alert_topic, (edge_alert_storm(target, i) for i in range(1000))
        )
        attacker.loop_stop()
        attacker.disconnect()
        # 3. 20 MiB publishes: the broker must refuse them.
        huge = _huge_publishes(m, hostile, hostile_topic, HUGE_PUBLISHES)
        # 4. The same classes straight into Kafka (a rogue or older gateway), and a
        #    record too large to dead-letter whole.
        kafka_sent = asyncio.run(_produce_hostile(endpoints, topics.telemetry, target))
        time.sleep(3.0)
        normal.stop.set()
        normal.join(180)
        assert normal.error is None, repr(normal.error)

        # Wait until every normal reading (and every old reading) is stored.
        devices = [d for devs in sites.values() for d in devs]
        expected = {(d, s) for d in devices for s in range(1, normal.sent[d] + 1)}
        expected_old = {(hostile, HOSTILE_SEQ + OLD_OFFSET + i) for i in range(PER_CLASS)}
        stored = _wait_stored(
            lambda: fetch_stored(
                admin_settings(endpoints["search"]),
                f"{run.index_prefix}readings*",
                [*devices, hostile],
            ),
            expected | expected_old,
            within=240.0,
        )
        dead = asyncio.run(_dead_letters(endpoints, topics.deadletter))
        lag = asyncio.run(_lag(endpoints, run.group_id, topics.telemetry))
        state = json.loads(_get(f"http://127.0.0.1:{web_port}/api/state") or "{}")
        watch.stop.set()
        watch.join(5)
        gw_metrics = _get(f"http://127.0.0.1:{gw_port}/metrics")
        alive = {svc.name: (svc.alive, svc.pid) for svc in services}
        log_bytes = {svc.name: svc.log_size() for svc in services}
    finally:
        for svc in reversed(services):
            svc.stop()
        asyncio.run(_drop_run(run, endpoints))

    detail = (
        f"sent={dict(sent)} huge={huge} kafka_sent={kafka_sent} dead={dict(dead)} "
        f"lag={lag} max_in_flight={watch.max_in_flight}\n"
        + "\n".join(f"--- {svc.name}\n{svc.tail(20)}" for svc in services)
    )
    # The normal fleet: everything stored exactly once.
    missing = expected - set(stored)
    doubled = {k: n for k, n in stored.items() if n > 1}
    assert not missing, (
        f"{len(missing)} normal readings missing, e.g. {sorted(missing)[:5]}\n{detail}"
    )
    assert not doubled, f"stored twice: {sorted(doubled)[:5]}\n{detail}"
    assert expected_old <= set(stored), f"old readings missing\n{detail}"
    # Nothing hostile stored: the only hostile keys are the old readings.
    hostile_keys = {k for k in stored if k[0] == hostile}
    assert hostile_keys == expected_old, detail
    # Every hostile MQTT message acknowledged by the broker was dead-lettered.
    assert sent == {
        **dict.fromkeys(DEAD_LETTERED, PER_CLASS),
        "old_reading": PER_CLASS,
        "alert_storm": 1000,
    }, detail
    assert dead["gateway"] >= PER_CLASS * len(DEAD_LETTERED), detail
    assert dead["processor"] >= kafka_sent, detail
    assert dead["too_big"] == 0, detail
    assert lag == 0, detail
    # The broker refused every 20 MiB publish.
    assert all(not h.startswith("puback: Success") for h in huge), detail
    assert all(h != "no answer" for h in huge), detail
    # The gateway's window never filled up; no stage restarted; the view lives.
    receive_max = _metric(gw_metrics, "thermowatch_gateway_receive_maximum") or 1000
    high_water = _metric(gw_metrics, "thermowatch_gateway_in_flight_max")
    assert max(watch.max_in_flight, high_water or 0) < receive_max, detail
    assert alive == {name: (True, pid) for name, pid in pids.items()}, detail
    # Rejections are counted, not logged one by one: ~70,000 hostile messages
    # (one line of ~150 bytes each would be ~10 MB) leave the logs small.
    assert all(n < LOG_BUDGET for n in log_bytes.values()), f"{log_bytes}\n{detail}"
    shown = {d["device_id"] for d in state.get("devices", [])}
    assert set(devices) <= shown, f"web view shows {len(shown)} devices\n{detail}"


def _wait_stored(
    fetch: Callable[[], dict[tuple[str, int], int]],
    expected: set[tuple[str, int]],
    within: float,
) -> dict[tuple[str, int], int]:
    deadline = time.monotonic() + within
    while True:
        stored = fetch()
        if expected <= set(stored) or time.monotonic() > deadline:
            return stored
        time.sleep(2.0)


async def _produce_hostile(endpoints: dict[str, Any], topic: str, target: Any) -> int:
    """Every dead-lettered class (and a 900 KB record) straight into Kafka."""
    from aiokafka import AIOKafkaProducer

    from tests.integration.hostile_fleet import DEAD_LETTERED

    producer = AIOKafkaProducer(
        **settings_for(endpoints["kafka"]).client_options(),
        max_request_size=2 * 1024 * 1024,
        acks="all",
    )
    await producer.start()
    n = 0
    try:
        key = target.device_id.encode()
        for make in DEAD_LETTERED.values():
            for i in range(KAFKA_PER_CLASS):
                await producer.send(topic, make(target, i), key=key)
                n += 1
        for value in (b"{" + b" " * 900_000 + b"}", b"\xff" * 900_000):
            await producer.send(topic, value, key=key)
            n += 1
        await producer.flush()
    finally:
        await producer.stop()
    return n


async def _dead_letters(endpoints: dict[str, Any], topic: str) -> Counter[str]:
    """Dead letters by who refused them; ``too_big`` counts any above the limit."""
    from telemetry_contract.deadletter import DEADLETTER_LIMIT
    from thermowatch.accounting.kafka import read_topic

    out: Counter[str] = Counter()
    for value in await read_topic(endpoints["kafka"], topic):
        doc = json.loads(value)
        out["gateway" if doc.get("gateway_id") else "processor"] += 1
        if len(value) > DEADLETTER_LIMIT:
            out["too_big"] += 1
    return out


async def _lag(endpoints: dict[str, Any], group: str, topic: str) -> int:
    """Records of ``topic`` the processor's group has not committed past (waits up to 60 s)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    kafka = endpoints["kafka"]
    deadline = time.monotonic() + 60
    while True:
        admin = AIOKafkaAdminClient(**settings_for(kafka).client_options())
        consumer = AIOKafkaConsumer(**settings_for(kafka).client_options())
        await admin.start()
        await consumer.start()
        try:
            committed = await admin.list_consumer_group_offsets(group)
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            ends = await consumer.end_offsets(parts)
        finally:
            await consumer.stop()
            await admin.close()
        lag = sum(
            end - (committed[tp].offset if tp in committed else 0) for tp, end in ends.items()
        )
        if lag == 0 or time.monotonic() > deadline:
            return int(lag)
        await asyncio.sleep(2.0)


async def _drop_run(run: Any, endpoints: dict[str, Any]) -> None:
    """Delete the run's indices and Kafka topics (the stack is shared and long-lived)."""
    import requests

    from stagekit.kafka import delete_topics
    from telemetry_contract import kafka_topics

    url = f"{endpoints['search']['url']}/{run.index_prefix}*"
    with contextlib.suppress(requests.RequestException), requests.Session() as http:
        http.delete(f"{url}?ignore_unavailable=true&allow_no_indices=true", timeout=60)
    with contextlib.suppress(Exception):  # best-effort cleanup of a shared stack
        await delete_topics(endpoints["kafka"], kafka_topics(run.kafka_prefix).all())

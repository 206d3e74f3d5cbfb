"""Gateway throughput benchmark: MQTT QoS 1 -> Kafka, beside its two limits.

Not a test. Runs against the running local stack (``thermowatch stack up``)
and prints a JSON summary. Three measurements on the same broker, the same
machine and the same records:

(a) a bare paho QoS 1 subscriber (manual ack right in ``on_message``) on the
    same shared-subscription filters, with the same Receive Maximum;
(b) a bare aiokafka producer sending the gateway's exact records (value, key,
    headers) with the gateway's settings (idempotent, acks=all, lz4,
    linger 5 ms, 256 KiB batches) and the same in-flight bound;
(c) the gateway itself as 1 and as 2 processes (``python -m gateway run``).

To measure the consumer side rather than the publisher, messages are queued
first: each subscriber (bare or gateway) connects once to create its
persistent session and subscription, disconnects, the benchmark publishes N
messages (the broker queues them in the session), and then the subscriber
reconnects and drains the queue. Throughput = N / (first message received ->
last one acknowledged after Kafka confirmed it). Zero loss is checked by
reading every (device, seq) back from Kafka.

    python benchmarks/gateway/bench.py --messages 30000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from deploy.local.stack import LocalStack, free_port
from gateway.bridge import bridge
from telemetry_contract import kafka_topics

REPO = Path(__file__).resolve().parents[2]
RECEIVE_MAXIMUM = 1000
PARTITIONS = 6
DEVICES = 4


def cpu_self() -> float:
    """CPU seconds (user + system) used by this process so far, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) used by another process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def payload(device: str, site: str, seq: int, ts: int) -> bytes:
    return json.dumps(
        {
            "type": "reading",
            "schema_version": 1,
            "device_id": device,
            "sensor_id": "28-0316a2791aff",
            "site": site,
            "seq": seq,
            "ts": ts,
            "temp_c": round(20.0 + (seq % 100) / 16, 4),
            "quality": "ok",
            "anomaly_score": 0.12,
            "is_anomaly": False,
            "detector": "hst",
        }
    ).encode()


def _add_user(stack: LocalStack, name: str) -> str:
    # The broker's reload can be slow when the machine is busy: try again.
    for attempt in range(3):
        try:
            return stack.add_mqtt_user(name)
        except Exception:
            if attempt == 2:
                raise
            time.sleep(5)
    raise AssertionError("unreachable")


class Fleet:
    """Benchmark devices (fresh MQTT users) and their messages."""

    def __init__(self, stack: LocalStack, run: str, n: int) -> None:
        self.site = f"b{run}"
        self.devices = [f"bench{run}-{i}" for i in range(DEVICES)]
        self.passwords = {d: _add_user(stack, d) for d in self.devices}
        ts = int(time.time() * 1000)
        self.messages = [
            (
                f"thermowatch/{self.site}/{self.devices[i % DEVICES]}/telemetry",
                payload(self.devices[i % DEVICES], self.site, i // DEVICES, ts),
            )
            for i in range(n)
        ]

    def publish_all(self, host: str, port: int) -> float:
        """Publish every message at QoS 1 (one connection per device); returns seconds."""
        started = time.perf_counter()
        threads = []
        for k, device in enumerate(self.devices):
            mine = self.messages[k::DEVICES]
            t = threading.Thread(
                target=_publish, args=(host, port, device, self.passwords[device], mine)
            )
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        return time.perf_counter() - started


def _publish(
    host: str, port: int, user: str, password: str, messages: list[tuple[str, bytes]]
) -> None:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"benchpub-{user}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.username_pw_set(user, password)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    infos = [client.publish(t, p, qos=1) for t, p in messages]
    for info in infos:
        info.wait_for_publish(timeout=600)
    client.disconnect()
    client.loop_stop()


def end_session(stack: LocalStack, client_id: str) -> None:
    """Discard a subscriber's persistent session on the broker.

    Left behind, a finished run's session keeps matching every later run's
    messages, and the broker queues a copy for it: each run would make the
    broker (and so every later measurement) a little slower.
    """
    ep = stack.endpoints()["mosquitto"]
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    c.username_pw_set("gateway", ep["users"]["gateway"])
    c.connect(ep["host"], ep["port"], clean_start=True)  # expiry 0: gone at disconnect
    c.loop_start()
    c.disconnect()
    c.loop_stop()


# --- (a) bare paho subscriber ------------------------------------------------------


class BareSubscriber:
    def __init__(
        self, host: str, port: int, password: str, group: str, client_id: str, prefix: str
    ) -> None:
        self.host, self.port, self.password = host, port, password
        self.group, self.client_id, self.prefix = group, client_id, prefix
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.done = threading.Event()
        self.target = 0
        self.subscribed = threading.Event()

    def connect(self) -> mqtt.Client:
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        c.username_pw_set("gateway", self.password)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        props.ReceiveMaximum = RECEIVE_MAXIMUM

        def on_connect(client: mqtt.Client, *_a: Any) -> None:
            client.subscribe(
                [
                    (f"$share/{self.group}/thermowatch/+/+/{k}", SubscribeOptions(qos=1))
                    for k in ("telemetry", "alert", "status")
                ]
            )

        def on_subscribe(*_a: Any) -> None:
            self.subscribed.set()

        def on_message(client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            client.ack(msg.mid, msg.qos)
            if not msg.topic.startswith(self.prefix):
                return
            now = time.perf_counter()
            if self.count == 0:
                self.first = now
            self.count += 1
            self.last = now
            if self.count >= self.target:
                self.done.set()

        c.on_connect = on_connect
        c.on_subscribe = on_subscribe
        c.on_message = on_message
        c.connect(self.host, self.port, clean_start=False, properties=props)
        c.loop_start()
        return c


def bench_bare_subscriber(stack: LocalStack, fleet: Fleet, run: str) -> dict[str, Any]:
    ep = stack.endpoints()["mosquitto"]
    sub = BareSubscriber(
        ep["host"],
        ep["port"],
        ep["users"]["gateway"],
        f"bare{run}",
        f"bare-{run}",
        f"thermowatch/{fleet.site}/",
    )
    sub.target = len(fleet.messages)
    c = sub.connect()
    sub.subscribed.wait(30)
    c.disconnect()
    c.loop_stop()
    fleet.publish_all(ep["host"], ep["port"])
    cpu0 = cpu_self()
    c = sub.connect()
    last_count, last_change = -1, time.monotonic()
    while not sub.done.wait(1.0):
        if sub.count != last_count:
            last_count, last_change = sub.count, time.monotonic()
        elif time.monotonic() - last_change > 60:
            break  # stalled: report what arrived
    ok = sub.done.is_set()
    cpu = cpu_self() - cpu0
    c.disconnect()
    c.loop_stop()
    end_session(stack, sub.client_id)
    seconds = sub.last - sub.first
    return {
        "cpu_us_per_msg": round(cpu / max(sub.count, 1) * 1e6, 1),
        "messages": sub.count,
        "complete": ok,
        "seconds": round(seconds, 3),
        "per_s": round((sub.count - 1) / seconds, 1) if seconds > 0 else None,
    }


def bench_gateway_reader(
    stack: LocalStack, fleet: Fleet, run: str, workdir: Path
) -> dict[str, Any]:
    """(a2) the gateway's own MQTT reader, acknowledging at once: no bridge, no Kafka.

    The gateway reads with stagekit.mqttwire (buffered reads, PUBLISH
    decoded off the buffer), not paho's reader, so (a) is not its MQTT limit:
    this is. Same broker, filters, session handling and Receive Maximum as (c).
    """
    from gateway.config import load_config
    from gateway.metrics import Metrics
    from gateway.mqtt import Incoming, MqttSource

    proc = GatewayProc(workdir, f"reader-{run}", stack, f"rd{run}", f"rd{run}")
    config = load_config(proc.config)
    n = len(fleet.messages)
    prefix = f"thermowatch/{fleet.site}/"

    async def session(drain: bool) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        seen = {"count": 0, "first": 0.0, "last": 0.0}

        def on_message(m: Incoming) -> None:
            source.ack(m)
            if not m.topic.startswith(prefix):
                return
            now = time.perf_counter()
            if seen["count"] == 0:
                seen["first"] = now
            seen["count"] += 1
            seen["last"] = now
            if seen["count"] >= n:
                done.set()

        source = MqttSource(config, Metrics(), loop, on_message)
        source.start()
        assert await source.wait_connected(60)
        out: dict[str, Any] = {}
        if drain:
            cpu0 = cpu_self()
            await asyncio.wait_for(done.wait(), 600)
            cpu = cpu_self() - cpu0
            seconds = seen["last"] - seen["first"]
            out = {
                "cpu_us_per_msg": round(cpu / n * 1e6, 1),
                "messages": seen["count"],
                "seconds": round(seconds, 3),
                "per_s": round((seen["count"] - 1) / seconds, 1),
            }
        await source.stop()
        return out

    asyncio.run(session(drain=False))  # the session and its subscription
    ep = stack.endpoints()["mosquitto"]
    fleet.publish_all(ep["host"], ep["port"])
    out = asyncio.run(session(drain=True))
    end_session(stack, config.mqtt_client_id)
    return out


# --- (b) bare aiokafka producer ---------------------------------------------------


async def create_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()


def _producer(bootstrap: str) -> AIOKafkaProducer:
    """A producer with the gateway's settings."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
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


async def bench_bare_producer(bootstrap: str, fleet: Fleet, run: str) -> dict[str, Any]:
    topics = kafka_topics(f"bp{run}")
    records = _records(fleet, topics)
    await create_topics(bootstrap, [topics.telemetry])
    producer = _producer(bootstrap)
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


async def bench_bare_batch_producer(bootstrap: str, fleet: Fleet, run: str) -> dict[str, Any]:
    """(b) again through aiokafka's batch API (``create_batch``/``send_batch``).

    ``send()`` costs far more per record than building the batches; the
    gateway builds its own, so the fair Kafka limit is the faster of the two.
    Same settings, same murmur2 partitioning by key, the same in-flight bound
    (a window of RECEIVE_MAXIMUM records).
    """
    from aiokafka.partitioner import DefaultPartitioner

    topics = kafka_topics(f"bb{run}")
    records = _records(fleet, topics)
    await create_topics(bootstrap, [topics.telemetry])
    producer = _producer(bootstrap)
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


# --- (c) the gateway ---------------------------------------------------------------


class GatewayProc:
    def __init__(self, workdir: Path, gid: str, stack: LocalStack, prefix: str, group: str) -> None:
        ep = stack.endpoints()
        self.gid = gid
        self.port = free_port()
        self.config = workdir / f"{gid}.toml"
        self.log = workdir / f"{gid}.log"
        self.config.write_text(f"""
[gateway]
id = "{gid}"
[mqtt]
host = "{ep["mosquitto"]["host"]}"
port = {ep["mosquitto"]["port"]}
username = "gateway"
password = "{ep["mosquitto"]["users"]["gateway"]}"
share_group = "{group}"
receive_maximum = {RECEIVE_MAXIMUM}
[kafka]
bootstrap_servers = ["{ep["kafka"]["bootstrap"]}"]
topic_prefix = "{prefix}"
partitions = {PARTITIONS}
[http]
host = "127.0.0.1"
port = {self.port}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "--log-level",
                    "WARNING",
                    "run",
                    "--config",
                    str(self.config),
                ],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def metrics(self) -> dict[str, float]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("#") or not line:
                continue
            name, value = line.rsplit(" ", 1)
            out[name] = out.get(name, 0.0) + float(value)
            base = name.split("{", 1)[0]
            if base != name and "_bucket" not in name:
                out[base] = out.get(base, 0.0) + float(value)
        return out

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def histogram_quantile(q: float, m: dict[str, float]) -> float | None:
    buckets = sorted(
        (
            float("inf")
            if k.split('le="')[1].rstrip('"}') == "+Inf"
            else float(k.split('le="')[1].rstrip('"}')),
            v,
        )
        for k, v in m.items()
        if k.startswith("thermowatch_gateway_kafka_produce_seconds_bucket")
    )
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_n = 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_n) / max(n - prev_n, 1e-9)
        prev_le, prev_n = le, n
    return None


def bench_gateways(
    stack: LocalStack, fleet: Fleet, run: str, count: int, workdir: Path
) -> dict[str, Any]:
    prefix, group = f"gw{count}{run}", f"gw{count}{run}"
    procs = [
        GatewayProc(workdir, f"bench{count}-{i}-{run}", stack, prefix, group) for i in range(count)
    ]
    for p in procs:  # create the sessions and subscriptions, then go away
        p.start()
    for p in procs:
        _wait(p.ready, 120)
    for p in procs:
        p.stop()
    ep = stack.endpoints()["mosquitto"]
    fleet.publish_all(ep["host"], ep["port"])
    n = len(fleet.messages)
    for p in procs:
        p.start()
    first = last = None
    cpu0: list[float] = []
    cpu1: list[float] = []
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        ms = [p.metrics() for p in procs]
        received = sum(m.get("thermowatch_gateway_received_total", 0) for m in ms)
        acked = sum(m.get("thermowatch_gateway_forwarded_total", 0) for m in ms)
        now = time.perf_counter()
        if first is None and received > 0:
            first = now
            cpu0 = [cpu_of(p.proc.pid) for p in procs if p.proc]
        if acked >= n:
            last = now
            cpu1 = [cpu_of(p.proc.pid) for p in procs if p.proc]
            break
        time.sleep(0.02)
    ms = [p.metrics() for p in procs]
    for p in procs:
        p.stop()
        end_session(stack, f"thermowatch-gateway-{p.gid}")
    assert first is not None and last is not None, "gateway did not finish"
    merged: dict[str, float] = {}
    for m in ms:
        for k, v in m.items():
            merged[k] = merged.get(k, 0.0) + v
    seqs = asyncio.run(
        read_back(stack.endpoints()["kafka"]["bootstrap"], kafka_topics(prefix).telemetry, n)
    )
    expected = {(d.encode(), s) for d in fleet.devices for s in range(n // DEVICES)}
    missing = expected - seqs
    p50 = histogram_quantile(0.5, merged)
    p99 = histogram_quantile(0.99, merged)
    return {
        "processes": count,
        "messages": n,
        "seconds": round(last - first, 3),
        "per_s": round(n / (last - first), 1),
        # From the first message seen (polled every 20 ms) to the last acknowledged.
        "cpu_us_per_msg": round((sum(cpu1) - sum(cpu0)) / n * 1e6, 1),
        "missing_in_kafka": len(missing),
        "per_process_forwarded": [m.get("thermowatch_gateway_forwarded_total", 0) for m in ms],
        "produce_latency_ms_p50": None if p50 is None else round(p50 * 1000, 2),
        "produce_latency_ms_p99": None if p99 is None else round(p99 * 1000, 2),
    }


async def read_back(bootstrap: str, topic: str, n: int) -> set[tuple[bytes, int]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: set[tuple[bytes, int]] = set()
    total = 0
    try:
        idle = 0
        while idle < 10:
            batches = await consumer.getmany(timeout_ms=500, max_records=10000)
            got = sum(len(v) for v in batches.values())
            idle = idle + 1 if got == 0 else 0
            for recs in batches.values():
                for r in recs:
                    total += 1
                    seen.add((r.key, json.loads(r.value)["seq"]))
            if len(seen) >= n and got == 0:
                break
    finally:
        await consumer.stop()
    return seen


def _wait(pred: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.1)


def one_run(stack: LocalStack, n: int, only: set[str]) -> dict[str, Any]:
    """(a), (b), (c1), (c2) on fresh devices, topics and sessions; ratios of this run."""
    run = uuid.uuid4().hex[:6]
    fleet = Fleet(stack, run, n)
    out: dict[str, Any] = {"load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        if "a" in only:
            out["a_bare_paho_subscriber"] = bench_bare_subscriber(stack, fleet, run)
        if "a2" in only:
            out["a2_gateway_mqtt_reader_alone"] = bench_gateway_reader(stack, fleet, run, Path(tmp))
        if "b" in only:
            out["b_bare_aiokafka_producer"] = asyncio.run(
                bench_bare_producer(stack.endpoints()["kafka"]["bootstrap"], fleet, run)
            )
        if "b2" in only:
            out["b2_bare_aiokafka_batch_producer"] = asyncio.run(
                bench_bare_batch_producer(stack.endpoints()["kafka"]["bootstrap"], fleet, run)
            )
        if "c1" in only:
            out["c_gateway_1_process"] = bench_gateways(stack, fleet, run, 1, Path(tmp))
        if "c2" in only:
            out["c_gateway_2_processes"] = bench_gateways(stack, fleet, run, 2, Path(tmp))
    out["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    a = out.get("a_bare_paho_subscriber", {}).get("per_s")
    # The Kafka limit is the faster of aiokafka's two ways to send.
    b = max(
        out.get("b_bare_aiokafka_producer", {}).get("per_s") or 0,
        out.get("b2_bare_aiokafka_batch_producer", {}).get("per_s") or 0,
    )
    c1 = out.get("c_gateway_1_process", {}).get("per_s")
    c2 = out.get("c_gateway_2_processes", {}).get("per_s")
    if a and b and c1:
        out["ratio_1_process_to_min_a_b"] = round(c1 / min(a, b), 3)
    if a and b and c2:
        out["ratio_2_processes_to_min_a_b"] = round(c2 / min(a, b), 3)
    if c1 and c2:
        out["growth_2_vs_1"] = round(c2 / c1, 3)
    a2 = out.get("a2_gateway_mqtt_reader_alone", {}).get("per_s")
    if a2 and b and c1:
        out["ratio_1_process_to_min_a2_b"] = round(c1 / min(a2, b), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=30000)
    ap.add_argument("--only", choices=["a", "a2", "b", "b2", "c1", "c2"], action="append")
    ap.add_argument(
        "--repeat", type=int, default=1, help="independent runs (each with its own baselines)"
    )
    args = ap.parse_args()
    stack = LocalStack()
    # Self-contained: start the local stack if it is not up (a no-op when it is).
    stack.up(["mosquitto", "kafka"])
    only = set(args.only or ["a", "a2", "b", "b2", "c1", "c2"])
    runs = []
    for i in range(args.repeat):
        runs.append(one_run(stack, args.messages, only))
        # Each run as soon as it is done (stderr), so a later failure loses nothing.
        print(f"run {i + 1}/{args.repeat}: {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
    out: dict[str, Any] = {"messages": args.messages, "cpus": os.cpu_count(), "runs": runs}
    ratios = sorted(
        r["ratio_1_process_to_min_a_b"] for r in runs if "ratio_1_process_to_min_a_b" in r
    )
    if ratios:
        out["ratio_1_process_median"] = ratios[len(ratios) // 2]
        out["ratio_1_process_min_max"] = [ratios[0], ratios[-1]]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

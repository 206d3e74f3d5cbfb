"""The gateway as a real process between the real Mosquitto and the real Kafka.

Each test runs ``python -m gateway run`` as a subprocess with its own Kafka
topic prefix, share group, gateway id and (for counting tests) its own device
users, so it can share the stack with other tests and a running pipeline.
The Kafka-outage test starts a private Kafka (a second LocalStack on free
ports under tmp_path) that it can stop for 30 s without touching the shared
one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from aiokafka import AIOKafkaConsumer
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from deploy.local.mqtt_auth import client_id_for
from deploy.local.stack import LocalStack, free_port
from stagekit.kafka import KafkaTarget, settings_for
from telemetry_contract import decode, kafka_topics
from testsupport.kafka_config import kafka_toml
from testsupport.mqtt_tls import stack_tls, tls_toml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "messages"
TIMEOUT = 120.0  # generous: a loaded 2-core machine


# --- helpers ------------------------------------------------------------------


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def reading(device: str, site: str, seq: int, ts: int | None = None) -> bytes:
    return json.dumps(
        {
            "type": "reading",
            "schema_version": 1,
            "device_id": device,
            "sensor_id": "host",
            "site": site,
            "seq": seq,
            "ts": ts if ts is not None else int(time.time() * 1000),
            "temp_c": 20.0 + (seq % 50) / 10,
        }
    ).encode()


@dataclass
class GatewayProcess:
    """``python -m gateway run`` in a subprocess, with its own config and log."""

    workdir: Path
    gateway_id: str
    mqtt_host: str
    mqtt_port: int
    mqtt_password: str
    kafka: KafkaTarget
    prefix: str
    share_group: str
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra: str = ""
    #: The stack whose CA and certificates the gateway uses (None: the shared one).
    stack: LocalStack | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"gateway-{self.gateway_id}.log"

    def write_config(self) -> Path:
        path = self.workdir / f"gateway-{self.gateway_id}.toml"
        path.write_text(
            f"""
[gateway]
id = "{self.gateway_id}"
shutdown_grace_s = 2.0
[mqtt]
host = "{self.mqtt_host}"
port = {stack_tls("gateway", self.stack).port or self.mqtt_port}
username = "gateway"
password = "{self.mqtt_password}"
share_group = "{self.share_group}"
receive_maximum = 500
reconnect_min_s = 1
reconnect_max_s = 2
# Long enough for any restart here; the default (7 days) would leave each test's
# session queueing every later test's messages on a long-lived broker.
session_expiry_s = 300
{tls_toml("gateway", self.stack)}
[kafka]
{kafka_toml(self.kafka, "gateway")}
topic_prefix = "{self.prefix}"
partitions = 3
request_timeout_ms = 10000
retry_backoff_max_s = 1.0
[http]
host = "127.0.0.1"
port = {self.http_port}
{self.extra}
""",
            encoding="utf-8",
        )
        return path

    def start(self) -> None:
        config = self.write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "--config", str(config)],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            body = exc.read().decode()
            exc.close()
            return exc.code, body
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def wait_ready(self) -> None:
        wait_for(lambda: self.alive() and self.ready(), f"gateway {self.gateway_id} ready")

    def metric(self, name: str) -> float:
        """Sum of every sample of one metric (all label values)."""
        status, text = self.get("/metrics")
        if status != 200:
            return float("nan")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Publisher:
    """A device's MQTT v5 connection publishing QoS 1 and waiting for PUBACKs."""

    def __init__(
        self, host: str, port: int, user: str, password: str, stack: LocalStack | None = None
    ) -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id_for(user, f"gwtest-pub-{uuid.uuid4().hex[:6]}"),
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.username_pw_set(user, password)
        tls = stack_tls(user, stack)  # a device's certificate, a service's password
        tls.apply(self.client)
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.connected = threading.Event()
        self.client.on_connect = lambda *_a: self.connected.set()
        self.client.connect(host, tls.port or port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(30), "publisher could not connect"

    def publish(
        self, topic: str, payload: bytes, props: list[tuple[str, str]] | None = None
    ) -> mqtt.MQTTMessageInfo:
        properties = None
        if props:
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = props
        info = self.client.publish(topic, payload, qos=1, properties=properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, info.rc
        return info

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_published(infos: list[mqtt.MQTTMessageInfo]) -> None:
    for info in infos:
        info.wait_for_publish(timeout=TIMEOUT)
        assert info.is_published()


class KafkaReader:
    """Reads every record of some topics from the beginning, in the background."""

    def __init__(self, kafka: KafkaTarget, topics: list[str]) -> None:
        self.kafka = kafka
        self.topics = topics
        self.records: list[Any] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.error: BaseException | None = None

    def start(self) -> KafkaReader:
        self._thread.start()
        return self

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(
            *self.topics,
            **settings_for(self.kafka).client_options(),
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            metadata_max_age_ms=2000,
        )
        try:
            while not self._stop.is_set():
                try:
                    await consumer.start()
                    break
                except Exception:
                    await asyncio.sleep(1)
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=500)
                with self._lock:
                    for recs in batches.values():
                        self.records.extend(recs)
        except BaseException as exc:
            self.error = exc
        finally:
            await consumer.stop()

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.records)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@contextlib.contextmanager
def reading_kafka(kafka: KafkaTarget, topics: list[str]) -> Iterator[KafkaReader]:
    reader = KafkaReader(kafka, topics).start()
    try:
        yield reader
    finally:
        reader.close()


def seqs_of(records: list[Any], device: str) -> list[int]:
    out = []
    for rec in records:
        if rec.key == device.encode():
            out.append(json.loads(rec.value)["seq"])
    return out


# --- fixtures -------------------------------------------------------------------


@dataclass
class Env:
    stack: LocalStack
    mqtt_host: str
    mqtt_port: int
    users: dict[str, str]
    kafka: KafkaTarget
    run: str

    def device(self, stem: str) -> tuple[str, str]:
        """A fresh device user (name, password) that only this test publishes as."""
        name = f"gw{self.run}-{stem}"
        return name, self.stack.add_mqtt_user(name)


@pytest.fixture
def env(local_stack: LocalStack, stack: dict[str, dict[str, Any]]) -> Env:
    m = stack["mosquitto"]
    return Env(
        stack=local_stack,
        mqtt_host=m["host"],
        mqtt_port=m["port"],
        users=m["users"],
        kafka=stack["kafka"],
        run=uuid.uuid4().hex[:8],
    )


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[list[GatewayProcess]]:
    procs: list[GatewayProcess] = []
    yield procs
    for gw in procs:
        gw.stop()


def make_gateway(
    env: Env, tmp_path: Path, procs: list[GatewayProcess], gateway_id: str, **kw: Any
) -> GatewayProcess:
    gw = GatewayProcess(
        workdir=tmp_path,
        gateway_id=gateway_id,
        mqtt_host=env.mqtt_host,
        mqtt_port=env.mqtt_port,
        mqtt_password=env.users["gateway"],
        kafka=kw.pop("kafka", env.kafka),
        prefix=kw.pop("prefix", f"t{env.run}"),
        share_group=kw.pop("share_group", f"gw{env.run}"),
        **kw,
    )
    procs.append(gw)
    return gw


# --- tests ------------------------------------------------------------------------


def test_valid_reading_and_golden_invalid_fixtures(
    env: Env, tmp_path: Path, gateways: list[GatewayProcess]
) -> None:
    gw = make_gateway(env, tmp_path, gateways, f"golden-{env.run}")
    gw.start()
    gw.wait_ready()
    topics = kafka_topics(gw.prefix)
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    valid = (FIXTURES / "valid" / "reading_ok.json").read_bytes()
    invalid = [
        (e, (FIXTURES / e["file"]).read_bytes())
        for e in manifest["invalid"]
        # A gateway never reads receipt topics (cloud to device).
        if e["topic"] is not None and not e["topic"].endswith("/receipt")
    ]
    # The golden payloads are all device s1-d01's.
    pub = Publisher(env.mqtt_host, env.mqtt_port, "s1-d01", env.users["s1-d01"])
    tag = f"golden-{env.run}"
    try:
        infos = [pub.publish("thermowatch/s1/s1-d01/telemetry", valid, [("test", f"{tag}-valid")])]
        for i, (entry, payload) in enumerate(invalid):
            infos.append(pub.publish(entry["topic"], payload, [("test", f"{tag}-{i}")]))
        wait_published(infos)
    finally:
        pub.close()

    def mine(records: list[Any]) -> dict[str, Any]:
        out = {}
        for rec in records:
            headers = dict(rec.headers)
            test_id = headers.get("mqtt.test", b"").decode()
            if test_id.startswith(tag):
                out[test_id] = rec
        return out

    with reading_kafka(env.kafka, [topics.telemetry, topics.deadletter]) as reader:
        wait_for(
            lambda: len(mine(reader.snapshot())) == 1 + len(invalid),
            "the valid reading and every dead letter",
        )
        got = mine(reader.snapshot())

    rec = got[f"{tag}-valid"]
    assert rec.topic == topics.telemetry
    assert rec.key == b"s1-d01"
    headers = dict(rec.headers)
    assert headers["schema_version"] == b"1"
    assert headers["mqtt_topic"] == b"thermowatch/s1/s1-d01/telemetry"
    assert headers["gateway_id"] == gw.gateway_id.encode()
    assert abs(int(headers["received_ts"]) - time.time() * 1000) < 600_000
    assert decode(rec.value) == decode(valid)

    for i, (entry, payload) in enumerate(invalid):
        rec = got[f"{tag}-{i}"]
        assert rec.topic == topics.deadletter, entry
        letter = decode(rec.value)
        assert letter.reason == entry["reason"], (entry, letter.detail)
        assert letter.source_topic == entry["topic"]
        if letter.payload_encoding == "utf-8":
            assert letter.payload.encode() == payload[: len(letter.payload.encode())]
        else:
            import base64

            assert payload.startswith(base64.b64decode(letter.payload))
    assert gw.alive() and gw.ready()
    assert gw.metric("thermowatch_gateway_deadlettered_total") >= len(invalid)


def test_kill9_mid_stream_then_restart_loses_nothing(
    env: Env, tmp_path: Path, gateways: list[GatewayProcess]
) -> None:
    device, password = env.device("k9")
    gw = make_gateway(env, tmp_path, gateways, f"k9-{env.run}")
    gw.start()
    gw.wait_ready()
    topics = kafka_topics(gw.prefix)
    total = 3000
    pub = Publisher(env.mqtt_host, env.mqtt_port, device, password)
    try:
        with reading_kafka(env.kafka, [topics.telemetry]) as reader:
            infos = []
            for seq in range(total):
                topic = f"thermowatch/sk/{device}/telemetry"
                infos.append(pub.publish(topic, reading(device, "sk", seq)))
                if seq == 500:
                    wait_for(lambda: len(seqs_of(reader.snapshot(), device)) > 100, "first records")
                    gw.kill9()
            wait_published(infos)  # the broker holds them in the gateway's session
            time.sleep(2)
            assert len(set(seqs_of(reader.snapshot(), device))) < total
            gw.start()  # same gateway id: same client id, same persistent session
            wait_for(
                lambda: set(seqs_of(reader.snapshot(), device)) == set(range(total)),
                "every seq in Kafka after the restart",
            )
            seqs = seqs_of(reader.snapshot(), device)
    finally:
        pub.close()
    assert len(seqs) >= total  # duplicates allowed (same seq), nothing missing
    gw.wait_ready()


def test_two_gateways_split_the_stream_and_the_union_is_complete(
    env: Env, tmp_path: Path, gateways: list[GatewayProcess]
) -> None:
    device, password = env.device("two")
    a = make_gateway(env, tmp_path, gateways, f"a-{env.run}")
    b = make_gateway(env, tmp_path, gateways, f"b-{env.run}")
    a.start()
    b.start()
    a.wait_ready()
    b.wait_ready()
    topics = kafka_topics(a.prefix)
    total = 2000
    pub = Publisher(env.mqtt_host, env.mqtt_port, device, password)
    try:
        infos = [
            pub.publish(f"thermowatch/s2/{device}/telemetry", reading(device, "s2", seq))
            for seq in range(total)
        ]
        wait_published(infos)
    finally:
        pub.close()
    with reading_kafka(env.kafka, [topics.telemetry]) as reader:
        wait_for(
            lambda: set(seqs_of(reader.snapshot(), device)) == set(range(total)),
            "the union of both gateways' records to hold every seq",
        )
        records = [r for r in reader.snapshot() if r.key == device.encode()]
    by_gateway: dict[bytes, int] = {}
    for rec in records:
        gid = dict(rec.headers)["gateway_id"]
        by_gateway[gid] = by_gateway.get(gid, 0) + 1
    assert set(by_gateway) == {a.gateway_id.encode(), b.gateway_id.encode()}, by_gateway
    assert all(n > 0 for n in by_gateway.values())
    assert sum(by_gateway.values()) == len(records)


def _mutations(rng: random.Random, device: str, site: str, n: int) -> Iterator[bytes]:
    """Random bytes, random JSON, and mutations of valid messages."""
    now = int(time.time() * 1000)
    base = [
        json.loads(reading(device, site, 1, now)),
        {
            "type": "gap",
            "device_id": device,
            "site": site,
            "ts": now,
            "first_seq": 1,
            "last_seq": 3,
            "reason": "outbox_full",
        },
        {
            "type": "edge_alert",
            "device_id": device,
            "site": site,
            "alert_id": "a1",
            "ts": now,
            "kind": "anomaly",
        },
        {"type": "device_status", "device_id": device, "site": site, "ts": now, "state": "online"},
    ]
    junk: list[Any] = [
        None,
        True,
        -1,
        0,
        2**64,
        1e308,
        -0.0,
        "",
        "x" * 300,
        [],
        {},
        [1, "a"],
        {"a": {"b": []}},
        "NaN",
        125.0001,
        -55.1,
        4102444800000,
    ]
    for i in range(n):
        kind = i % 5
        if kind == 0:
            yield rng.randbytes(rng.randint(0, 300))
        elif kind == 1:
            doc: Any = rng.choice(junk)
            yield json.dumps(doc).encode()
        else:
            doc = dict(rng.choice(base))
            for _ in range(rng.randint(1, 3)):
                op = rng.random()
                key = rng.choice([*doc.keys(), "extra", "seq", "ts", "device_id"])
                if op < 0.4:
                    doc[key] = rng.choice(junk)
                elif op < 0.6:
                    doc.pop(key, None)
                elif op < 0.7:
                    doc["seq"] = rng.randint(0, 10**6)  # a valid change
                else:
                    doc[key] = doc.get(key)
            raw = json.dumps(doc).encode()
            if kind == 4 and raw:
                pos = rng.randrange(len(raw))
                raw = raw[:pos] + rng.randbytes(rng.randint(0, 3)) + raw[pos + 1 :]
            yield raw


def test_fuzz_10000_payloads_all_accounted_for(
    env: Env, tmp_path: Path, gateways: list[GatewayProcess]
) -> None:
    device, password = env.device("fz")
    site = "sf"
    gw = make_gateway(env, tmp_path, gateways, f"fz-{env.run}")
    gw.start()
    gw.wait_ready()
    topics = kafka_topics(gw.prefix)
    rng = random.Random(4)
    kinds = ["telemetry", "telemetry", "telemetry", "alert", "status"]
    n = 10_000
    pub = Publisher(env.mqtt_host, env.mqtt_port, device, password)
    try:
        infos = []
        for i, payload in enumerate(_mutations(rng, device, site, n)):
            topic = f"thermowatch/{site}/{device}/{kinds[i % len(kinds)]}"
            infos.append(pub.publish(topic, payload, [("fuzz", str(i))]))
        wait_published(infos)
    finally:
        pub.close()

    def ids(records: list[Any]) -> set[int]:
        out = set()
        for rec in records:
            value = dict(rec.headers).get("mqtt.fuzz")
            if value is not None and rec.key == device.encode():
                out.add(int(value))
        return out

    every = [topics.telemetry, topics.edge_alerts, topics.status, topics.deadletter]
    with reading_kafka(env.kafka, every) as reader:
        wait_for(lambda: ids(reader.snapshot()) == set(range(n)), "all 10,000 in Kafka", 240)
        records = reader.snapshot()
    forwarded = sum(1 for r in records if r.topic != topics.deadletter)
    dead = sum(1 for r in records if r.topic == topics.deadletter)
    assert forwarded > 0 and dead > 0
    assert gw.alive() and gw.ready(), gw.log_tail()


# --- Kafka outage: a private Kafka this test may stop ---------------------------------


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[LocalStack]:
    kafka_port = free_port(span=1)  # the controller listens on port + 1
    private = LocalStack(
        stack_dir=tmp_path / "stack",
        mqtt_port=free_port(span=2),
        kafka_port=kafka_port,
        search_port=free_port(),
    )
    private.up(["kafka"], timeout=180.0)
    try:
        yield private
    finally:
        private.down(["kafka"])


def test_kafka_stopped_30s_mid_stream_then_every_reading_is_in_kafka(
    env: Env, tmp_path: Path, gateways: list[GatewayProcess], private_kafka: LocalStack
) -> None:
    device, password = env.device("ko")
    kafka = private_kafka.endpoints()["kafka"]
    gw = make_gateway(env, tmp_path, gateways, f"ko-{env.run}", kafka=kafka)
    gw.start()
    gw.wait_ready()
    topics = kafka_topics(gw.prefix)
    total = 1200
    rate = 20.0  # per second: the stream runs for a minute, across the outage
    pub = Publisher(env.mqtt_host, env.mqtt_port, device, password)
    infos: list[mqtt.MQTTMessageInfo] = []
    not_ready_seen = threading.Event()

    def stream() -> None:
        start = time.monotonic()
        for seq in range(total):
            delay = start + seq / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            infos.append(
                pub.publish(f"thermowatch/so/{device}/telemetry", reading(device, "so", seq))
            )

    streamer = threading.Thread(target=stream, daemon=True)
    try:
        streamer.start()
        time.sleep(8)
        private_kafka.stop("kafka")
        outage_end = time.monotonic() + 30
        in_flight_max = 0.0
        while time.monotonic() < outage_end:
            if not gw.ready():
                not_ready_seen.set()
            in_flight_max = max(in_flight_max, gw.metric("thermowatch_gateway_in_flight"))
            assert gw.alive(), gw.log_tail()
            time.sleep(1)
        private_kafka.start("kafka", timeout=180.0)
        streamer.join(timeout=TIMEOUT)
        assert not streamer.is_alive()
        wait_published(infos)
    finally:
        pub.close()
    with reading_kafka(kafka, [topics.telemetry]) as reader:
        wait_for(
            lambda: set(seqs_of(reader.snapshot(), device)) == set(range(total)),
            "every reading in Kafka after the outage",
            180,
        )
    assert not_ready_seen.is_set(), "readiness never dropped while Kafka was down"
    # Receive Maximum bounded the unacknowledged messages; the broker kept the rest.
    assert 0 < in_flight_max <= 500
    gw.wait_ready()
    assert gw.metric("thermowatch_gateway_kafka_errors_total") > 0

"""The gateway's run loop with fake adapters: ack only after Kafka, in arrival order.

The fakes go in through the constructor and are driven through the ports
(gateway.ports): a message is delivered, a write confirmed, a connection made.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from gateway.app import Gateway, RetireOptions, build_gateway
from gateway.bridge import KafkaRecord
from gateway.config import GatewayConfig, GatewaySettings, HttpSettings, MqttSettings
from gateway.metrics import Metrics
from gateway.ports import Clock, Incoming
from stagekit.health import HealthServer


class FakeSink:
    """Writes complete only when the test says so."""

    def __init__(self) -> None:
        self.pending: list[tuple[KafkaRecord, Any]] = []
        self.healthy = True
        self.broken: str | None = None
        self.on_written: Any = None

    async def start(self, on_written: Any) -> None:
        self.on_written = on_written

    def submit(self, record: KafkaRecord, token: Any) -> None:
        self.pending.append((record, token))

    def confirm(self, index: int) -> None:
        self.on_written(self.pending[index][1])

    async def stop(self) -> None:
        pass


class FakeMqtt:
    """Delivers what the test hands it; records the acks."""

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.connected = False
        self.paused = False
        self.fatal: str | None = None
        self.session_present: bool | None = None
        self.started = asyncio.Event()
        self.on_message: Any = None
        self.on_connected: Any = None
        self.unsubscribed = False
        self.ended_session = False
        self.published: list[tuple[str, bytes]] = []

    def start(self, on_message: Any, on_connected: Any) -> None:
        self.on_message, self.on_connected = on_message, on_connected
        self.started.set()

    def connect(self, connection: int) -> None:
        """The broker accepted connection number ``connection``."""
        self.connected = True
        self.on_connected(connection)

    def deliver(self, message: Incoming) -> None:
        self.on_message(message)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def ack(self, message: Incoming) -> None:
        self.acked.append(message.mid)

    def publish(self, topic: str, payload: bytes) -> bool:
        if not self.connected:
            return False
        self.published.append((topic, payload))
        return True

    async def wait_connected(self, wait_s: float) -> bool:
        for _ in range(int(wait_s / 0.01)):
            if self.connected:
                return True
            await asyncio.sleep(0.01)
        return self.connected

    async def unsubscribe(self) -> bool:
        self.unsubscribed = True
        return True

    async def stop(self, *, end_session: bool = False) -> None:
        self.ended_session = end_session


def reading(seq: int) -> bytes:
    return json.dumps(
        {
            "type": "reading",
            "device_id": "d1",
            "sensor_id": "host",
            "site": "s1",
            "seq": seq,
            "ts": int(time.time() * 1000),
            "temp_c": 20.0,
        }
    ).encode()


def incoming(mid: int, payload: bytes, connection: int = 1) -> Incoming:
    return Incoming("thermowatch/s1/d1/telemetry", payload, mid, 1, connection, ())


@asynccontextmanager
async def running(cfg: GatewayConfig) -> AsyncIterator[tuple[Gateway, FakeSink, FakeMqtt]]:
    """A gateway running on fakes, connected (connection 1); stopped afterwards."""
    sink, mqtt = FakeSink(), FakeMqtt()
    gw = Gateway(cfg, source=mqtt, sink=sink)
    task = asyncio.create_task(gw.run())
    await asyncio.wait_for(mqtt.started.wait(), 5)
    mqtt.connect(1)
    try:
        yield gw, sink, mqtt
    finally:
        gw.stop()
        assert await asyncio.wait_for(task, 5) == 0


def config(**mqtt: Any) -> GatewayConfig:
    return GatewayConfig(
        gateway=GatewaySettings(id="gw-t", shutdown_grace_s=0),
        mqtt=MqttSettings(**mqtt),
        http=HttpSettings(enabled=False),
    )


@pytest.fixture
async def wired() -> AsyncIterator[tuple[Gateway, FakeSink, FakeMqtt]]:
    async with running(config()) as rig:
        yield rig


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_acks_only_after_kafka_and_in_arrival_order(
    wired: tuple[Gateway, FakeSink, FakeMqtt],
) -> None:
    gw, sink, mqtt = wired
    for mid in (1, 2, 3):
        mqtt.deliver(incoming(mid, reading(mid)))
    await settle()
    assert len(sink.pending) == 3 and mqtt.acked == [] and gw.in_flight == 3
    sink.confirm(2)
    await settle()
    assert mqtt.acked == []  # message 3 is written but 1 and 2 are not
    sink.confirm(0)
    await settle()
    assert mqtt.acked == [1]
    sink.confirm(1)
    await settle()
    assert mqtt.acked == [1, 2, 3] and gw.in_flight == 0
    assert gw.metrics.in_flight._value.get() == 0
    assert gw.metrics.forwarded.labels("telemetry")._value.get() == 3


async def test_bad_payload_is_acked_only_after_its_dead_letter_is_written(
    wired: tuple[Gateway, FakeSink, FakeMqtt],
) -> None:
    gw, sink, mqtt = wired
    mqtt.deliver(incoming(7, b"\x00garbage"))
    await settle()
    record = sink.pending[0][0]
    assert record.topic == gw.topics.deadletter
    assert mqtt.acked == []
    sink.confirm(0)
    await settle()
    assert mqtt.acked == [7]
    assert gw.metrics.deadlettered.labels("not_json")._value.get() == 1


async def test_reconnect_drops_the_old_connections_window(
    wired: tuple[Gateway, FakeSink, FakeMqtt],
) -> None:
    gw, sink, mqtt = wired
    mqtt.deliver(incoming(1, reading(1)))
    mqtt.deliver(incoming(2, reading(2)))
    mqtt.connect(2)  # the broker re-sends 1 and 2 on the new connection
    assert gw.in_flight == 0
    mqtt.deliver(incoming(1, reading(1), connection=1))  # late, from the old connection
    assert len(sink.pending) == 2  # ignored
    mqtt.deliver(incoming(5, reading(1), connection=2))
    mqtt.deliver(incoming(6, reading(2), connection=2))
    assert gw.in_flight == 2
    sink.confirm(0)  # an old connection's write completing: counted, never acked
    sink.confirm(3)
    assert mqtt.acked == []
    sink.confirm(2)
    assert mqtt.acked == [5, 6]
    assert gw.in_flight == 0


async def test_reconnect_acks_a_new_head_that_is_already_written(
    wired: tuple[Gateway, FakeSink, FakeMqtt],
) -> None:
    gw, sink, mqtt = wired
    mqtt.deliver(incoming(1, reading(1)))
    # Forced (a real source reports the connection first): entries of two
    # connections in the window, the newer one's written.
    gw._connection = 2
    mqtt.deliver(incoming(9, reading(2), connection=2))
    sink.confirm(1)
    assert mqtt.acked == []  # behind message 1
    mqtt.connect(2)
    assert mqtt.acked == [9]


async def test_readiness_needs_both_brokers(wired: tuple[Gateway, FakeSink, FakeMqtt]) -> None:
    gw, sink, mqtt = wired
    assert gw.readiness()[0]
    sink.healthy = False
    assert gw.readiness() == (
        False,
        "mqtt=up kafka=down in_flight=0 in_flight_max=0 receive_maximum=1000",
    )
    sink.healthy = True
    mqtt.connected = False
    assert not gw.readiness()[0]


async def test_stop_before_kafka_answers_exits_cleanly() -> None:
    cfg = GatewayConfig(http=HttpSettings(enabled=False))
    # Nothing listens on port 9 (discard): start() keeps retrying until stopped.
    cfg = GatewayConfig(
        http=HttpSettings(enabled=False),
        kafka=type(cfg.kafka)(bootstrap_servers=("127.0.0.1:9",), retry_backoff_max_s=0.2),
    )
    gw = build_gateway(cfg)
    task = asyncio.create_task(gw.run())
    await asyncio.sleep(1.0)
    assert not gw.readiness()[0]
    gw.stop()
    assert await asyncio.wait_for(task, 30) == 0


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        exc.close()
        return exc.code, body


async def test_health_endpoints() -> None:
    state: dict[str, Any] = {"ready": False}
    metrics = Metrics()
    metrics.received.labels("telemetry").inc(3)
    server = HealthServer(
        "127.0.0.1", 0, metrics.render, lambda: (state["ready"], f"ready={state['ready']}")
    )
    await server.start()
    try:
        port = server.port
        assert await asyncio.to_thread(_get, port, "/healthz") == (200, b"ok\n")
        assert await asyncio.to_thread(_get, port, "/readyz") == (503, b"ready=False\n")
        state["ready"] = True
        assert await asyncio.to_thread(_get, port, "/readyz") == (200, b"ready=True\n")
        status, body = await asyncio.to_thread(_get, port, "/metrics")
        assert status == 200
        assert b'thermowatch_gateway_received_total{kind="telemetry"} 3.0' in body
        assert (await asyncio.to_thread(_get, port, "/nope"))[0] == 404
    finally:
        await server.stop()


async def test_reading_pauses_at_the_window_bound_and_resumes_at_half() -> None:
    async with running(config(receive_maximum=4)) as (gw, sink, mqtt):
        for mid in range(1, 4):
            mqtt.deliver(incoming(mid, reading(mid)))
        assert not mqtt.paused
        mqtt.deliver(incoming(4, reading(4)))
        assert mqtt.paused and gw.in_flight == 4  # the broker may not honour Receive Maximum
        sink.confirm(0)
        assert mqtt.paused and gw.in_flight == 3
        sink.confirm(1)
        assert not mqtt.paused and gw.in_flight == 2 and mqtt.acked == [1, 2]
        metric = gw.metrics.render().decode()
        assert "thermowatch_gateway_in_flight 2.0" in metric


async def retiring(
    cfg: GatewayConfig, retire: RetireOptions
) -> tuple[Gateway, FakeSink, FakeMqtt, asyncio.Task[int]]:
    """A gateway retiring a session that is present, on fakes, connected (connection 1)."""
    sink, mqtt = FakeSink(), FakeMqtt()
    mqtt.session_present = True
    gw = Gateway(cfg, source=mqtt, sink=sink, retire=retire)
    task = asyncio.create_task(gw.run())
    await asyncio.wait_for(mqtt.started.wait(), 5)
    mqtt.connect(1)
    return gw, sink, mqtt, task


async def test_retire_forwards_the_session_then_ends_it() -> None:
    gw, sink, mqtt, task = await retiring(config(), RetireOptions(idle_s=0.2, timeout_s=30))
    mqtt.deliver(incoming(1, reading(1)))
    await asyncio.sleep(0.5)
    assert not task.done() and not mqtt.unsubscribed  # waits for the write
    sink.confirm(0)
    assert await asyncio.wait_for(task, 10) == 0
    assert mqtt.acked == [1] and mqtt.unsubscribed
    assert gw.session_ended and mqtt.ended_session  # DISCONNECT with session expiry 0


async def test_retire_keeps_the_session_when_messages_stay_unwritten() -> None:
    gw, _sink, mqtt, task = await retiring(config(), RetireOptions(idle_s=0.2, timeout_s=0.5))
    mqtt.deliver(incoming(1, reading(1)))
    assert await asyncio.wait_for(task, 10) == 1
    assert not gw.session_ended and not mqtt.ended_session and not mqtt.unsubscribed


async def test_the_injected_clock_stamps_received_ts_and_bounds_event_time() -> None:
    sink, mqtt = FakeSink(), FakeMqtt()
    now = int(time.time() * 1000) - 3_600_000  # the gateway's clock is an hour behind
    clock = Clock(wall_ms=lambda: now, monotonic=time.monotonic)
    gw = Gateway(config(), source=mqtt, sink=sink, clock=clock)
    task = asyncio.create_task(gw.run())
    await asyncio.wait_for(mqtt.started.wait(), 5)
    mqtt.connect(1)
    mqtt.deliver(incoming(1, reading(1)))  # event time "now": an hour ahead of that clock
    record = sink.pending[0][0]
    assert record.topic == gw.topics.deadletter
    assert record.reason is not None and record.reason.value == "future_timestamp"
    assert dict(record.headers)["received_ts"] == str(now).encode()
    gw.stop()
    assert await asyncio.wait_for(task, 5) == 0

"""The gateway's run loop with fake adapters: ack only after Kafka, in arrival order."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.bridge import KafkaRecord
from gateway.config import GatewayConfig, GatewaySettings, HttpSettings
from gateway.metrics import Metrics
from gateway.mqtt import Incoming
from stagekit.health import HealthServer


class FakeSink:
    """Writes complete only when the test says so."""

    def __init__(self, on_written: Any) -> None:
        self.pending: list[tuple[KafkaRecord, Any]] = []
        self.healthy = True
        self.on_written = on_written

    def submit(self, record: KafkaRecord, token: Any) -> None:
        self.pending.append((record, token))

    def confirm(self, index: int) -> None:
        self.on_written(self.pending[index][1])

    async def stop(self) -> None:
        pass


class FakeMqtt:
    def __init__(self) -> None:
        self.acked: list[int] = []
        self.connected = True
        self.paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def ack(self, message: Incoming) -> None:
        self.acked.append(message.mid)

    async def stop(self, *, end_session: bool = False) -> None:
        pass


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


@pytest.fixture
def wired() -> tuple[Gateway, FakeSink, FakeMqtt]:
    gw = Gateway(GatewayConfig(gateway=GatewaySettings(id="gw-t")))
    sink, mqtt = FakeSink(gw._on_written), FakeMqtt()
    gw._sink = sink  # type: ignore[assignment]
    gw._mqtt = mqtt  # type: ignore[assignment]
    gw._on_connected(1)
    return gw, sink, mqtt


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_acks_only_after_kafka_and_in_arrival_order(
    wired: tuple[Gateway, FakeSink, FakeMqtt],
) -> None:
    gw, sink, mqtt = wired
    for mid in (1, 2, 3):
        gw._on_message(incoming(mid, reading(mid)))
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
    gw._on_message(incoming(7, b"\x00garbage"))
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
    gw._on_message(incoming(1, reading(1)))
    gw._on_message(incoming(2, reading(2)))
    gw._on_connected(2)  # the broker re-sends 1 and 2 on the new connection
    assert gw.in_flight == 0
    gw._on_message(incoming(1, reading(1), connection=1))  # late, from the old connection
    assert len(sink.pending) == 2  # ignored
    gw._on_message(incoming(5, reading(1), connection=2))
    gw._on_message(incoming(6, reading(2), connection=2))
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
    gw._on_message(incoming(1, reading(1)))
    gw._connection = 2  # (normally set by _on_connected; forced to mix connections)
    gw._on_message(incoming(9, reading(2), connection=2))  # entries of both in the window
    sink.confirm(1)
    assert mqtt.acked == []  # behind message 1
    gw._on_connected(2)
    assert mqtt.acked == [9]


async def test_readiness_needs_both_brokers(wired: tuple[Gateway, FakeSink, FakeMqtt]) -> None:
    gw, sink, mqtt = wired
    assert gw.readiness()[0]
    sink.healthy = False
    assert gw.readiness() == (False, "mqtt=up kafka=down in_flight=0")
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
    gw = Gateway(cfg)
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
    from gateway.config import MqttSettings

    gw = Gateway(
        GatewayConfig(gateway=GatewaySettings(id="gw-w"), mqtt=MqttSettings(receive_maximum=4))
    )
    sink, mqtt = FakeSink(gw._on_written), FakeMqtt()
    gw._sink = sink  # type: ignore[assignment]
    gw._mqtt = mqtt  # type: ignore[assignment]
    gw._on_connected(1)
    for mid in range(1, 4):
        gw._on_message(incoming(mid, reading(mid)))
    assert not mqtt.paused
    gw._on_message(incoming(4, reading(4)))
    assert mqtt.paused and gw.in_flight == 4  # the broker may not honour Receive Maximum
    sink.confirm(0)
    assert mqtt.paused and gw.in_flight == 3
    sink.confirm(1)
    assert not mqtt.paused and gw.in_flight == 2 and mqtt.acked == [1, 2]
    metric = gw.metrics.render().decode()
    assert "thermowatch_gateway_in_flight 2.0" in metric

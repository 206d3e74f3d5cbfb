"""Hostile input through the real Mosquitto (the shipped config), the gateway and Kafka.

A private Mosquitto + Kafka (free ports, under tmp) started from the shipped
templates, so the broker limits tested are the ones we ship
(deploy/local/mosquitto.conf). The gateway runs as ``python -m gateway run``.

* One device sends 1,200 payloads ``{"\\ud800": NaN}`` (more than the
  gateway's default in-flight window of 1,000; before issue 14 each held a
  window slot for good), then ten of each other hostile class (deep nesting,
  NaN under ``a.b`` / ``a[0]``, invalid UTF-8, 20 KB, empty, a year-10000
  timestamp, an id with a trailing newline) while another device publishes
  normal readings: every
  reading of the normal device is in Kafka exactly once, every poison message
  is dead-lettered, the gateway never filled its window and is still ready.
* A 20 MiB publish is refused by the broker (``max_packet_size``: the sender
  is disconnected), reaches neither the gateway nor Kafka, and the gateway is
  unaffected.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from deploy.local.stack import LocalStack, free_port
from telemetry_contract import DeadLetter, decode, kafka_topics
from tests.integration.test_gateway_e2e import (
    GatewayProcess,
    Publisher,
    reading,
    reading_kafka,
    wait_for,
    wait_published,
)
from testsupport.mqtt_tls import stack_tls

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

POISON = b'{"\\ud800": NaN}'
N_POISON = 1_200
#: Ten of each other hostile class a device can get past the broker (its own
#: topic, a packet under 32 KiB): each must be dead-lettered too.
OTHERS = {
    "deep_nesting": b"[" * 1000 + b"]" * 1000,
    "nan_under_dotted_key": b'{"a.b": NaN}',
    "nan_under_bracket_key": b'{"a[0]": NaN}',
    "invalid_utf8": b'{"type":"\xff\xfe"}',
    "oversize_20k": b'{"x":"' + b"a" * 20_000 + b'"}',
    "empty": b"",
}
N_OTHERS = 10 * len(OTHERS)
N_GOOD = 400
WINDOW = 1_000  # the gateway's default mqtt.receive_maximum


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Mosquitto (shipped config template) and Kafka, private to this module."""
    root = tmp_path_factory.mktemp("hostile")
    stack = LocalStack(stack_dir=root, mqtt_port=free_port(span=2), kafka_port=free_port(span=1))
    try:
        stack.up(["mosquitto", "kafka"], timeout=240.0)
        yield stack
    finally:
        stack.down()


class DefaultWindowGateway(GatewayProcess):
    """The e2e test's gateway process, with the default in-flight window."""

    def write_config(self) -> Path:
        path = super().write_config()
        text = path.read_text(encoding="utf-8").replace("receive_maximum = 500\n", "")
        path.write_text(text, encoding="utf-8")
        return path


@pytest.fixture
def gateway(shipped: LocalStack, tmp_path: Path) -> Iterator[GatewayProcess]:
    ep = shipped.endpoints()
    run = uuid.uuid4().hex[:8]
    gw = DefaultWindowGateway(
        workdir=tmp_path,
        gateway_id=f"hostile-{run}",
        mqtt_host=ep["mosquitto"]["host"],
        mqtt_port=ep["mosquitto"]["port"],
        mqtt_password=ep["mosquitto"]["users"]["gateway"],
        kafka=ep["kafka"],
        prefix=f"hostile{run}",
        share_group=f"g{run}",
        stack=shipped,
    )
    gw.start()
    try:
        gw.wait_ready()
        yield gw
    finally:
        gw.stop()


def _device(stack: LocalStack, stem: str) -> tuple[str, str]:
    name = f"h{uuid.uuid4().hex[:6]}-{stem}"
    return name, stack.add_mqtt_user(name)


def test_a_poisoning_device_does_not_stall_the_other_devices(
    shipped: LocalStack, gateway: GatewayProcess
) -> None:
    ep = shipped.endpoints()["mosquitto"]
    bad, bad_pw = _device(shipped, "bad")
    good, good_pw = _device(shipped, "good")
    topics = kafka_topics(gateway.prefix)
    with reading_kafka(gateway.kafka, [topics.telemetry, topics.deadletter]) as kafka:
        poisoner = Publisher(ep["host"], ep["port"], bad, bad_pw, shipped)
        normal = Publisher(ep["host"], ep["port"], good, good_pw, shipped)
        try:
            infos = []
            good_seq = 0
            for i in range(N_POISON):
                if i % 50 == 0:
                    # ~500 messages/s, a busy fleet's pace rather than one burst: a
                    # burst fills any window before Kafka's first answer (that is flow
                    # control, not a stall); here a full window can only mean a stall.
                    time.sleep(0.1)
                infos.append(poisoner.publish(f"thermowatch/s1/{bad}/telemetry", POISON))
                if i % 3 == 0 and good_seq < N_GOOD:
                    good_seq += 1
                    infos.append(
                        normal.publish(
                            f"thermowatch/s1/{good}/telemetry", reading(good, "s1", good_seq)
                        )
                    )
            for payload in OTHERS.values():
                for _ in range(10):
                    infos.append(poisoner.publish(f"thermowatch/s1/{bad}/telemetry", payload))
            # A year-10000 timestamp and an id with a trailing newline, in valid-looking readings.
            for _ in range(10):
                far = reading(bad, "s1", 1, ts=253_402_300_800_001)
                newline = reading(bad, "s1", 2).replace(f'"{bad}"'.encode(), f'"{bad}\\n"'.encode())
                infos.append(poisoner.publish(f"thermowatch/s1/{bad}/telemetry", far))
                infos.append(poisoner.publish(f"thermowatch/s1/{bad}/telemetry", newline))
            while good_seq < N_GOOD:
                good_seq += 1
                infos.append(
                    normal.publish(
                        f"thermowatch/s1/{good}/telemetry", reading(good, "s1", good_seq)
                    )
                )
            wait_published(infos)
        finally:
            poisoner.close()
            normal.close()

        def good_seqs() -> list[int]:
            return sorted(
                json.loads(r.value)["seq"]
                for r in kafka.snapshot()
                if r.topic == topics.telemetry and r.key == good.encode()
            )

        def poison_letters() -> list[DeadLetter]:
            out = []
            for r in kafka.snapshot():
                if r.topic == topics.deadletter:
                    letter = decode(r.value)
                    assert isinstance(letter, DeadLetter)
                    if f"/{bad}/" in letter.source_topic:
                        out.append(letter)
            return out

        wait_for(lambda: len(good_seqs()) >= N_GOOD, "every normal reading in Kafka")
        hostile = N_POISON + N_OTHERS + 20
        wait_for(lambda: len(poison_letters()) >= hostile, "every hostile message dead-lettered")
        time.sleep(2.0)  # a duplicate would show up now
        assert good_seqs() == list(range(1, N_GOOD + 1))  # all, exactly once
        letters = poison_letters()
        assert len(letters) == hostile, f"{len(letters)} dead letters for {hostile} messages"
    wait_for(lambda: gateway.metric("thermowatch_gateway_in_flight") == 0, "every message acked")
    assert gateway.metric("thermowatch_gateway_deadlettered_total") == N_POISON + N_OTHERS + 20
    in_flight_max = gateway.metric("thermowatch_gateway_in_flight_max")
    assert 0 < in_flight_max < WINDOW, f"in-flight window exhausted: {in_flight_max}"
    assert gateway.metric("thermowatch_gateway_receive_maximum") == WINDOW
    assert gateway.metric("thermowatch_gateway_mqtt_protocol_errors_total") == 0
    assert gateway.alive() and gateway.ready(), gateway.log_tail()
    # One rate-limited line per reason, not one per message (and no traceback).
    log = gateway.log_path.read_text(errors="replace")
    assert log.count("event=dead_letter") < 20, gateway.log_tail()
    assert "Traceback" not in log


def test_a_20_mib_publish_is_refused_by_the_broker_and_the_gateway_is_unaffected(
    shipped: LocalStack, gateway: GatewayProcess
) -> None:
    ep = shipped.endpoints()["mosquitto"]
    device, password = _device(shipped, "big")
    topic = f"thermowatch/s1/{device}/telemetry"
    topics = kafka_topics(gateway.prefix)
    connack: list[Any] = []
    gone = threading.Event()
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=device,  # a device connects only with its own id
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.username_pw_set(device, password)
    stack_tls(device, shipped).apply(client)
    client.on_connect = lambda _c, _u, _f, rc, props: connack.append(props)
    client.on_disconnect = lambda *_a: gone.set()
    with reading_kafka(gateway.kafka, [topics.telemetry, topics.deadletter]) as kafka:
        client.connect(ep["host"], ep["port"], keepalive=30)
        client.loop_start()
        try:
            wait_for(lambda: bool(connack), "CONNACK")
            # The broker announces its limit to MQTT v5 clients...
            assert getattr(connack[0], "MaximumPacketSize", None) == 32768
            # ...which paho 2.2 does not enforce on what it sends: an attacker's client.
            info = client.publish(topic, b"x" * (20 * 1024 * 1024), qos=1)
            assert gone.wait(120), "the broker kept the connection of a 20 MiB publish"
            assert not info.is_published()  # never acknowledged
        finally:
            client.loop_stop()
        # The gateway still forwards the next device's reading, and nothing of the big one.
        after, after_pw = _device(shipped, "after")
        pub = Publisher(ep["host"], ep["port"], after, after_pw, shipped)
        try:
            wait_published(
                [pub.publish(f"thermowatch/s1/{after}/telemetry", reading(after, "s1", 1))]
            )
        finally:
            pub.close()
        wait_for(lambda: any(r.key == after.encode() for r in kafka.snapshot()), "the next reading")
        assert not any(r.key == device.encode() for r in kafka.snapshot())
        assert all(f"/{device}/" not in r.value.decode(errors="replace") for r in kafka.snapshot())
    assert gateway.metric("thermowatch_gateway_reconnects_total") == 0
    assert gateway.metric("thermowatch_gateway_mqtt_protocol_errors_total") == 0
    assert gateway.alive() and gateway.ready(), gateway.log_tail()

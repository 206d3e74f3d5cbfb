"""Receipts from the real gateway process, read by a plain paho subscriber as the device.

Each test starts ``python -m gateway run`` (helpers of ``test_gateway_e2e``)
with its own Kafka topic prefix, share group and device user, publishes
readings as that device and listens on the device's receipt topic with the
device's own credentials (the shipped ACL lets a device read its receipts and
the gateway write them).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from deploy.local.stack import LocalStack
from telemetry_contract import Receipt, decode, kafka_topics
from tests.integration import test_gateway_e2e as e2e
from tests.integration.test_gateway_e2e import (
    TIMEOUT,
    Env,
    GatewayProcess,
    Publisher,
    make_gateway,
    reading,
    reading_kafka,
    seqs_of,
    wait_for,
    wait_published,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The gateway tests' fixtures, shared.
env = e2e.env
gateways = e2e.gateways
private_kafka = e2e.private_kafka


class ReceiptListener:
    """The device's own MQTT v5 login (its publisher's connection: a device connects
    only with its own id as client id), subscribed to its receipt topic."""

    def __init__(self, site: str, device: str, pub: Publisher) -> None:
        self.topic = f"thermowatch/{site}/{device}/receipt"
        self.receipts: list[Receipt] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = pub.client
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.subscribe(self.topic, qos=0)
        assert self._subscribed.wait(30), "the device could not subscribe to its receipts"

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
        assert not codes[0].is_failure, f"receipt subscription refused: {codes[0]}"
        self._subscribed.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        assert msg.qos == 0 and not msg.retain
        receipt = decode(msg.payload)
        assert isinstance(receipt, Receipt)
        with self._lock:
            self.receipts.append(receipt)

    def snapshot(self) -> list[Receipt]:
        with self._lock:
            return list(self.receipts)

    def covered(self, gateway_id: str | None = None) -> set[int]:
        return {
            seq
            for r in self.snapshot()
            if gateway_id is None or r.gateway_id == gateway_id
            for first, last in r.ranges
            for seq in range(first, last + 1)
        }


def gap(device: str, site: str, first: int, last: int) -> bytes:
    return json.dumps(
        {
            "type": "gap",
            "device_id": device,
            "site": site,
            "ts": int(time.time() * 1000),
            "first_seq": first,
            "last_seq": last,
            "reason": "outbox_full",
        }
    ).encode()


def started(*gws: GatewayProcess) -> None:
    for gw in gws:
        gw.start()
    for gw in gws:
        gw.wait_ready()


@contextlib.contextmanager
def device_link(env: Env, site: str, device: str, password: str) -> Iterator[Link]:
    """The device's publisher and its receipt listener on the same connection, closed afterwards."""
    pub = Publisher(env.mqtt_host, env.mqtt_port, device, password)
    try:
        yield Link(ReceiptListener(site, device, pub), pub)
    finally:
        pub.close()


@dataclass(frozen=True)
class Link:
    listener: ReceiptListener
    pub: Publisher


def publish(pub: Publisher, site: str, device: str, seqs: range) -> None:
    topic = f"thermowatch/{site}/{device}/telemetry"
    wait_published([pub.publish(topic, reading(device, site, seq)) for seq in seqs])


def test_receipts_cover_exactly_what_kafka_has(
    env: Env, tmp_path: Path, gateways: list[GatewayProcess]
) -> None:
    device, password = env.device("rc")
    site = "sr"
    gw = make_gateway(env, tmp_path, gateways, f"rc-{env.run}", share_group="")
    started(gw)
    topic = f"thermowatch/{site}/{device}/telemetry"
    with device_link(env, site, device, password) as link:
        publish(link.pub, site, device, range(300))
        wait_published(
            [
                link.pub.publish(topic, gap(device, site, 300, 309)),
                link.pub.publish(topic, b"\x00not json"),  # a dead letter: no receipt
                link.pub.publish(topic, reading(device, "elsewhere", 999)),  # site mismatch: same
            ]
        )
        expected = set(range(310))
        wait_for(lambda: link.listener.covered() >= expected, "receipts for every seq")
        with reading_kafka(env.bootstrap, [kafka_topics(gw.prefix).telemetry]) as reader:
            wait_for(lambda: len(reader.snapshot()) >= 301, "the records in Kafka")
            in_kafka = {
                json.loads(r.value)["seq"]
                for r in reader.snapshot()
                if r.key == device.encode() and json.loads(r.value)["type"] == "reading"
            }
        time.sleep(1.0)  # any late receipt would be counted below
        receipts = link.listener.snapshot()
    covered = {s for r in receipts for a, b in r.ranges for s in range(a, b + 1)}
    assert covered == expected  # nothing dead-lettered is confirmed
    assert in_kafka == set(range(300))
    assert {r.gateway_id for r in receipts} == {gw.gateway_id}
    assert all(r.device_id == device and r.site == site for r in receipts)
    assert gw.metric("thermowatch_gateway_receipts_sent_total") >= len(receipts)
    assert gw.metric("thermowatch_gateway_receipt_bytes_total") > 0


def test_two_gateways_on_a_shared_subscription_each_confirm_what_they_forwarded(
    env: Env, tmp_path: Path, gateways: list[GatewayProcess]
) -> None:
    device, password = env.device("rs")
    site = "ss"
    a = make_gateway(env, tmp_path, gateways, f"rsa-{env.run}")
    b = make_gateway(env, tmp_path, gateways, f"rsb-{env.run}")
    started(a, b)
    total = 600
    with device_link(env, site, device, password) as link:
        publish(link.pub, site, device, range(total))
        wait_for(lambda: link.listener.covered() == set(range(total)), "receipts for every seq")
    with reading_kafka(env.bootstrap, [kafka_topics(a.prefix).telemetry]) as reader:
        wait_for(lambda: len(set(seqs_of(reader.snapshot(), device))) == total, "Kafka")
        records = [r for r in reader.snapshot() if r.key == device.encode()]
    forwarded: dict[str, set[int]] = {}
    for rec in records:
        gid = dict(rec.headers)["gateway_id"].decode()
        forwarded.setdefault(gid, set()).add(json.loads(rec.value)["seq"])
    assert set(forwarded) == {a.gateway_id, b.gateway_id}
    for gw in (a, b):  # each confirms only (and all) that it forwarded
        assert link.listener.covered(gw.gateway_id) == forwarded[gw.gateway_id]


def test_receipts_disabled_publish_none(
    env: Env, tmp_path: Path, gateways: list[GatewayProcess]
) -> None:
    device, password = env.device("rd")
    site = "sd"
    off = "[receipts]\nenabled = false"
    gw = make_gateway(env, tmp_path, gateways, f"rd-{env.run}", share_group="", extra=off)
    started(gw)
    with device_link(env, site, device, password) as link:
        publish(link.pub, site, device, range(100))
        with reading_kafka(env.bootstrap, [kafka_topics(gw.prefix).telemetry]) as reader:
            wait_for(lambda: set(seqs_of(reader.snapshot(), device)) == set(range(100)), "Kafka")
        wait_for(lambda: gw.metric("thermowatch_gateway_forwarded_total") >= 100, "acks")
        time.sleep(2.0)  # ten default intervals: a receipt would be here
    assert link.listener.snapshot() == []
    assert gw.metric("thermowatch_gateway_receipts_sent_total") == 0


def test_no_receipt_while_kafka_is_down_then_all_after(
    env: Env, tmp_path: Path, gateways: list[GatewayProcess], private_kafka: LocalStack
) -> None:
    device, password = env.device("ro")
    site = "so"
    bootstrap = private_kafka.endpoints()["kafka"]["bootstrap"]
    gw = make_gateway(env, tmp_path, gateways, f"ro-{env.run}", share_group="", bootstrap=bootstrap)
    started(gw)
    with device_link(env, site, device, password) as link:
        publish(link.pub, site, device, range(50))
        wait_for(lambda: link.listener.covered() == set(range(50)), "receipts before the outage")
        private_kafka.stop("kafka")
        publish(link.pub, site, device, range(50, 150))  # the broker acknowledges them
        wait_for(lambda: not gw.ready(), "the gateway to notice Kafka is down")
        time.sleep(3.0)
        assert link.listener.covered() == set(range(50)), "a receipt while Kafka was down"
        private_kafka.start("kafka", timeout=180.0)
        wait_for(
            lambda: link.listener.covered() == set(range(150)), "receipts after the outage", 180
        )
    with reading_kafka(bootstrap, [kafka_topics(gw.prefix).telemetry]) as reader:
        wait_for(
            lambda: set(seqs_of(reader.snapshot(), device)) == set(range(150)), "Kafka", TIMEOUT
        )

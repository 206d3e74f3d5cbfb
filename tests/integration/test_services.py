"""The local stack's services, exercised for real: MQTT auth and ACLs, Kafka
consumer groups, the search server's indices and data streams, `stack status`.

Every test uses names unique to this run, so it can share a stack with a
running pipeline and with earlier runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from opensearchpy import OpenSearch
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from deploy.local import cli
from deploy.local.mqtt_auth import client_id_for
from deploy.local.pki import client_tls
from deploy.local.stack import LocalStack
from stagekit.kafka import settings_for

pytestmark = pytest.mark.integration

TIMEOUT = 30.0  # generous: a loaded 2-core machine
RUN = uuid.uuid4().hex[:10]


class _Mqtt:
    """A connected paho MQTT v5 client that records PUBACKs and messages."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.cond = threading.Condition()
        self.acks: dict[int, ReasonCode] = {}
        self.messages: list[mqtt.MQTTMessage] = []
        self.subacks: dict[int, list[ReasonCode]] = {}

    def wait(self, predicate: Any, what: str) -> Any:
        with self.cond:
            ok = self.cond.wait_for(predicate, timeout=TIMEOUT)
        assert ok, f"timed out waiting for {what}"
        return ok

    def subscribe(self, topic: str) -> None:
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        codes = self.wait(lambda: self.subacks.get(mid), f"SUBACK {topic}")
        assert not codes[0].is_failure, f"subscribe {topic}: {codes[0]}"

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
        rc: ReasonCode = self.wait(lambda: self.acks.get(info.mid), f"PUBACK {topic}")
        return rc

    def received(self, payload: bytes) -> bool:
        return any(m.payload == payload for m in self.messages)


@contextlib.contextmanager
def _mqtt(stack: dict[str, Any], user: str, *, password: bool = False) -> Iterator[_Mqtt]:
    """``user`` logged in with its certificate (client port), or with ``password``
    on the broker's password port (TLS with the stack's CA either way)."""
    endpoint = stack["mosquitto"]
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id_for(user, f"it-{RUN}"),
        protocol=mqtt.MQTTv5,
    )
    if password:
        client.username_pw_set(user, endpoint["users"][user])
        client.tls_set(ca_certs=endpoint["ca_file"])
        port = endpoint["password_port"]
    else:
        tls = client_tls(endpoint, user)  # a device's certificate, a service's password
        tls.apply(client)
        port = tls.port
    box = _Mqtt(client)
    connack: list[ReasonCode] = []

    def on_connect(c: mqtt.Client, u: object, f: object, rc: ReasonCode, p: object) -> None:
        with box.cond:
            connack.append(rc)
            box.cond.notify_all()

    def on_publish(c: mqtt.Client, u: object, mid: int, rc: ReasonCode, p: object) -> None:
        with box.cond:
            box.acks[mid] = rc
            box.cond.notify_all()

    def on_subscribe(c: mqtt.Client, u: object, mid: int, rcs: list[ReasonCode], p: object) -> None:
        with box.cond:
            box.subacks[mid] = rcs
            box.cond.notify_all()

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        with box.cond:
            box.messages.append(msg)
            box.cond.notify_all()

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(endpoint["host"], port, keepalive=30)
    client.loop_start()
    try:
        box.wait(lambda: connack, f"CONNACK for {user}")
        assert not connack[0].is_failure, f"connect as {user}: {connack[0]}"
        yield box
    finally:
        client.disconnect()
        client.loop_stop()


def test_mqtt_device_to_gateway_shared_subscription(stack: dict[str, Any]) -> None:
    topic = f"thermowatch/it-{RUN}/dev-test-1/telemetry"
    payload = f"ok-{RUN}".encode()
    with _mqtt(stack, "gateway") as gateway, _mqtt(stack, "dev-test-1") as device:
        gateway.subscribe(f"$share/g{RUN}/thermowatch/#")
        assert device.publish(topic, payload).value == 0
        gateway.wait(lambda: gateway.received(payload), "message at the gateway")
        [msg] = [m for m in gateway.messages if m.payload == payload]
        assert msg.topic == topic


def test_mqtt_device_cannot_publish_as_another_device(stack: dict[str, Any]) -> None:
    denied = f"denied-{RUN}".encode()
    marker = f"after-denied-{RUN}".encode()
    with _mqtt(stack, "gateway") as gateway, _mqtt(stack, "dev-test-1") as device:
        gateway.subscribe(f"$share/g{RUN}/thermowatch/#")
        rc = device.publish(f"thermowatch/it-{RUN}/dev-test-2/telemetry", denied)
        assert rc.value == 135, f"expected PUBACK 135 Not authorized, got {rc}"
        # Same publisher, same QoS: the broker keeps order, so once the later
        # allowed message is in, the denied one would have been too.
        assert device.publish(f"thermowatch/it-{RUN}/dev-test-1/telemetry", marker).value == 0
        gateway.wait(lambda: gateway.received(marker), "marker at the gateway")
        assert not gateway.received(denied)


def test_mqtt_receipt_topics_gateway_writes_device_reads_only_its_own(
    local_stack: LocalStack,
) -> None:
    # A fresh device user: its reload also makes a broker started from an older
    # checkout re-read the ACL template.
    device = f"rc-{RUN}"
    local_stack.add_mqtt_user(device)
    stack = local_stack.endpoints()
    mine = f"thermowatch/it-{RUN}/{device}/receipt"
    other = f"thermowatch/it-{RUN}/dev-test-2/receipt"
    with _mqtt(stack, "gateway") as gateway, _mqtt(stack, device) as reader:
        reader.subscribe(f"thermowatch/it-{RUN}/+/receipt")
        assert gateway.publish(other, b"not yours").value in (0, 16)
        assert gateway.publish(mine, b"yours").value == 0
        # One publisher, one QoS: once "yours" is in, "not yours" would have been.
        reader.wait(lambda: reader.received(b"yours"), "the receipt at its device")
        assert not reader.received(b"not yours")
        # Not widened: the gateway still writes nothing but receipts.
        assert gateway.publish(f"thermowatch/it-{RUN}/{device}/config", b"x").value == 135


def test_mqtt_wrong_password_is_refused(stack: dict[str, Any]) -> None:
    endpoint = stack["mosquitto"]
    bad = {**stack, "mosquitto": {**endpoint, "users": {"dev-test-3": "wrong-password"}}}
    refused = pytest.raises(AssertionError, match="connect as dev-test-3")
    with refused, _mqtt(bad, "dev-test-3", password=True):
        pass
    with _mqtt(stack, "dev-test-3", password=True):  # the right one, over TLS
        pass


async def test_kafka_idempotent_produce_and_group_commit(stack: dict[str, Any]) -> None:
    kafka = stack["kafka"]
    topic = f"it-{RUN}-readings"
    group = f"it-{RUN}-group"
    count = 20
    async with asyncio.timeout(120):
        admin = AIOKafkaAdminClient(**settings_for(kafka).client_options())
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])

            producer = AIOKafkaProducer(
                **settings_for(kafka).client_options(), enable_idempotence=True
            )
            await producer.start()
            try:
                for i in range(count):
                    await producer.send_and_wait(topic, f"{i}".encode(), key=f"d{i % 4}".encode())
            finally:
                await producer.stop()

            consumer = AIOKafkaConsumer(
                topic,
                **settings_for(kafka).client_options(),
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            await consumer.start()
            try:
                seen: dict[int, int] = {}
                values: set[bytes] = set()
                while len(values) < count:
                    batch = await consumer.getmany(timeout_ms=1000)
                    for tp, records in batch.items():
                        for record in records:
                            values.add(record.value)
                            seen[tp.partition] = record.offset + 1
                await consumer.commit()
            finally:
                await consumer.stop()
            assert values == {f"{i}".encode() for i in range(count)}

            committed = await admin.list_consumer_group_offsets(group)
            got = {
                tp.partition: meta.offset
                for tp, meta in committed.items()
                if tp.topic == topic and meta.offset >= 0
            }
            assert got == seen
            assert sum(got.values()) == count
            assert all(isinstance(tp, TopicPartition) for tp in committed)
        finally:
            with contextlib.suppress(Exception):
                await admin.delete_topics([topic])
            await admin.close()


@pytest.fixture
def search(stack: dict[str, Any]) -> Iterator[OpenSearch]:
    ep = stack["search"]
    client = OpenSearch(
        hosts=[ep["url"]],
        http_auth=("admin", ep["users"]["admin"]),
        ca_certs=ep["ca_file"],
        timeout=TIMEOUT,
    )
    try:
        yield client
    finally:
        client.close()


def test_search_index_search_and_create_conflict(search: OpenSearch) -> None:
    index = f"it-{RUN}-readings"
    try:
        search.indices.create(index=index, body={"settings": {"number_of_replicas": 0}})
        search.index(
            index=index,
            id="r1",
            body={"device_id": "dev-test-1", "value": 21.5},
            refresh="wait_for",
        )
        hits = search.search(
            index=index, body={"query": {"term": {"device_id.keyword": "dev-test-1"}}}
        )
        assert hits["hits"]["total"]["value"] == 1
        assert hits["hits"]["hits"][0]["_source"]["value"] == 21.5

        body = [
            {"create": {"_index": index, "_id": "r2"}},
            {"value": 1},
            {"create": {"_index": index, "_id": "r2"}},
            {"value": 2},
        ]
        result = search.bulk(body=body, refresh="wait_for")
        assert result["errors"] is True
        assert [item["create"]["status"] for item in result["items"]] == [201, 409]
    finally:
        search.indices.delete(index=index, ignore_unavailable=True)


def test_search_data_stream_write(search: OpenSearch) -> None:
    stream = f"it-{RUN}-ds"
    template = f"it-{RUN}-ds-template"
    try:
        search.indices.put_index_template(
            name=template,
            body={
                "index_patterns": [f"{stream}*"],
                "data_stream": {},
                "template": {"settings": {"number_of_replicas": 0}},
            },
        )
        doc = {"@timestamp": "2026-01-01T00:00:00Z", "device_id": "dev-test-1", "value": 20.0}
        created = search.index(index=stream, body=doc, op_type="create", refresh="wait_for")
        assert created["result"] == "created"
        assert created["_index"].startswith(f".ds-{stream}-")
        info = search.indices.get_data_stream(name=stream)
        assert [ds["name"] for ds in info["data_streams"]] == [stream]
        assert search.count(index=stream)["count"] == 1
    finally:
        with contextlib.suppress(Exception):
            search.indices.delete_data_stream(name=stream)
        with contextlib.suppress(Exception):
            search.indices.delete_index_template(name=template)


def test_stack_status_json(stack: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="thermowatch")
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["stack", "status", "--json"])
    assert args.func(args) == 0
    status = json.loads(capsys.readouterr().out)
    assert set(status) == {"mosquitto", "kafka", "search"}
    assert set(status["mosquitto"]) == {"host", "port", "pid", "tls", "auth"}
    client = {"security_protocol", "sasl_mechanism", "ca_file"}
    assert set(status["kafka"]) == {"host", "port", "pid", "bootstrap", "tls", "auth", *client}
    assert (status["kafka"]["tls"], status["kafka"]["auth"]) == (True, "scram-sha-512")
    assert "users" not in status["kafka"]  # passwords stay out of status
    assert set(status["search"]) == {"host", "port", "pid", "url", "ca_file", "tls", "auth"}
    assert (status["mosquitto"]["tls"], status["mosquitto"]["auth"]) == (
        True, "certificate+password"
    )  # fmt: skip
    assert all(isinstance(entry["pid"], int) for entry in status.values())
    assert status["kafka"]["bootstrap"] == stack["kafka"]["bootstrap"]
    assert status["search"]["url"] == stack["search"]["url"]
    assert status["mosquitto"]["port"] == stack["mosquitto"]["port"]


def test_mqtt_add_user_reloads_broker(local_stack: Any, stack: dict[str, Any]) -> None:
    password = local_stack.add_mqtt_user("dev-test-added")
    fresh = local_stack.endpoints()
    assert fresh["mosquitto"]["users"]["dev-test-added"] == password
    with _mqtt(fresh, "dev-test-added", password=True):  # the password login works too
        pass
    with _mqtt(fresh, "dev-test-added") as device:
        rc = device.publish(f"thermowatch/it-{RUN}/dev-test-added/telemetry", b"hello")
        assert not rc.is_failure, rc  # 0, or 16 "No matching subscribers"

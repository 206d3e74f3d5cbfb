"""Prove each service of a running stack really works, with the real clients.

Each probe does one meaningful round trip and returns a :class:`Probe` with
the measured time; none of them trusts a port being open:

- MQTT: a device publishes a golden reading on its own topic (QoS 1) and the
  gateway user receives it through a shared subscription; a publish under
  another device's topic is refused by the ACL.
- Kafka: an idempotent producer writes a record to a fresh topic (created
  and deleted with :mod:`stagekit.kafka`) and a consumer group reads it back
  and commits.
- Search: a document is indexed with a deterministic id, found by a search,
  and a second create with the same id is refused (409), through the shared
  search backend (:mod:`stagekit.search`).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from stagekit.kafka import KafkaTarget, create_topics, delete_topics, settings_for
from stagekit.search import Request, SearchError, SearchSettings, ThreadedBackend, make_backend
from stagekit.search import api as search
from telemetry_contract import Reading, TopicKind, encode, kafka_key, mqtt_filter, mqtt_topic

__all__ = ["Probe", "probe_kafka", "probe_mqtt", "probe_search", "run_all"]


@dataclass(frozen=True)
class Probe:
    """Outcome of one probe."""

    service: str
    ok: bool
    detail: str
    seconds: float


def _reading(device: str, site: str, seq: int) -> Reading:
    return Reading(
        device_id=device,
        sensor_id="host",
        site=site,
        seq=seq,
        ts=time.time_ns() // 1_000_000,
        temp_c=21.5,
    )


def probe_mqtt(endpoint: dict[str, Any], timeout: float = 15.0) -> Probe:
    """Device publish → shared-subscription receive, plus one denied publish."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from deploy.local.pki import client_tls

    t0 = time.monotonic()
    device, site = "s1-d01", "s1"
    tag = uuid.uuid4().hex[:8]
    got = threading.Event()
    subscribed = threading.Event()
    received: list[bytes] = []

    sub = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"gateway:smoke-sub-{tag}", protocol=mqtt.MQTTv5
    )
    sub_tls = client_tls(endpoint, "gateway")  # a service: TLS and its password
    sub_tls.apply(sub)
    sub.on_subscribe = lambda *_a: subscribed.set()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        received.append(msg.payload)
        got.set()

    sub.on_message = on_message
    # A device may connect only with its own id as client id.
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv5)
    pub_tls = client_tls(endpoint, device)  # a device: its certificate
    pub_tls.apply(pub)
    # PUBACK verdicts by message id: the first publish's PUBACK may arrive after
    # its message reached the subscriber, so only the mid says which one it is.
    denied: dict[int, bool] = {}
    acked = threading.Condition()

    def on_publish(_c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        with acked:
            denied[mid] = bool(rc.is_failure)
            acked.notify_all()

    pub.on_publish = on_publish
    try:
        sub.connect(endpoint["host"], sub_tls.port)
        sub.loop_start()
        sub.subscribe(
            mqtt_filter(TopicKind.TELEMETRY, device_id=device, share_group=f"smoke{tag}"), 1
        )
        if not subscribed.wait(timeout):
            return Probe("mosquitto", False, "subscription not acknowledged", time.monotonic() - t0)
        pub.connect(endpoint["host"], pub_tls.port)
        pub.loop_start()
        payload = encode(_reading(device, site, 1))
        pub.publish(mqtt_topic(site, device, TopicKind.TELEMETRY), payload, qos=1)
        if not got.wait(timeout) or received[0] != payload:
            return Probe("mosquitto", False, "reading not received", time.monotonic() - t0)
        other = mqtt_topic("s1", "s1-d02", TopicKind.TELEMETRY)
        mid = pub.publish(other, encode(_reading("s1-d02", "s1", 1)), qos=1).mid
        with acked:
            answered = acked.wait_for(lambda: mid in denied, timeout)
        if not answered:
            return Probe("mosquitto", False, "no PUBACK for denied publish", time.monotonic() - t0)
        if not denied[mid]:
            return Probe(
                "mosquitto", False, "ACL let s1-d01 publish as s1-d02", time.monotonic() - t0
            )
    finally:
        for c in (pub, sub):
            c.disconnect()
            c.loop_stop()
    return Probe(
        "mosquitto",
        True,
        "authenticated QoS 1 publish received via $share; foreign topic refused (PUBACK 135)",
        time.monotonic() - t0,
    )


async def _kafka(kafka: KafkaTarget, wait_s: float) -> str:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = f"smoke.{uuid.uuid4().hex[:10]}"
    await create_topics(kafka, [topic], partitions=1)
    options = settings_for(kafka).client_options()
    try:
        producer = AIOKafkaProducer(**options, enable_idempotence=True)
        await producer.start()
        try:
            payload = encode(_reading("s1-d01", "s1", 1))
            meta = await producer.send_and_wait(topic, payload, key=kafka_key("s1-d01"))
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            **options,
            group_id=f"smoke-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            records: list[Any] = []
            deadline = time.monotonic() + wait_s
            while not records and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=1000, max_records=1)
                records = [r for rs in batch.values() for r in rs]
            if not records or records[0].value != payload:
                raise RuntimeError("record not consumed back")
            await consumer.commit()
        finally:
            await consumer.stop()
    finally:
        await delete_topics(kafka, [topic])
    return (
        f"idempotent produce to partition {meta.partition} offset {meta.offset}, "
        "consumed and committed"
    )


def probe_kafka(endpoint: dict[str, Any], timeout: float = 30.0) -> Probe:
    """Produce, consume in a group, commit (as the stack's ``admin`` user when it has users)."""
    t0 = time.monotonic()
    try:
        detail = asyncio.run(asyncio.wait_for(_kafka(endpoint, timeout), timeout * 2))
    except Exception as exc:  # a probe reports, it does not crash
        return Probe("kafka", False, f"{type(exc).__name__}: {exc}", time.monotonic() - t0)
    return Probe("kafka", True, detail, time.monotonic() - t0)


def probe_search(
    endpoint: dict[str, Any], timeout: float = 30.0, *, backend: str = "opensearch"
) -> Probe:
    """Create a document by id, find it, and see a duplicate create refused.

    ``backend``: ``opensearch`` or ``elasticsearch`` (the server at ``endpoint``).
    """
    t0 = time.monotonic()
    index = f"smoke-{uuid.uuid4().hex[:10]}"
    doc = {"device_id": "s1-d01", "seq": 1, "temp_c": 21.5, "@timestamp": "2026-01-01T00:00:00Z"}
    # admin: the probe writes and deletes its own ``smoke-*`` index
    settings = SearchSettings.from_endpoint(endpoint, "admin", backend=backend, timeout_s=timeout)
    client = make_backend(settings)
    try:
        first = _status(client, search.create_doc(index, "s1-d01-1", doc, refresh=True))
        again = _status(client, search.create_doc(index, "s1-d01-1", doc))
        found = client.perform_sync(
            search.search(index, {"query": {"term": {"device_id.keyword": "s1-d01"}}})
        )
        _status(client, search.delete_index(index))
    except SearchError as exc:
        return Probe("search", False, str(exc), time.monotonic() - t0)
    finally:
        client.close_sync()
    hits = found.get("hits", {}).get("total", {}).get("value")
    if first != 201 or again != 409 or hits != 1:
        detail = f"create={first} duplicate={again} hits={hits}"
        return Probe("search", False, detail, time.monotonic() - t0)
    return Probe(
        "search",
        True,
        "indexed by id, searched (1 hit), duplicate create refused (409)",
        time.monotonic() - t0,
    )


def _status(backend: ThreadedBackend, request: Request) -> int:
    """The HTTP status of ``request``: 201 for a created document, the error's otherwise.

    No answer at all (connection refused, timed out) is raised as :class:`SearchError`.
    """
    try:
        answer = backend.perform_sync(request)
    except SearchError as exc:
        if exc.status is None:
            raise
        return exc.status
    return 201 if isinstance(answer, dict) and answer.get("result") == "created" else 200


def run_all(
    endpoints: dict[str, dict[str, Any]], *, search_backend: str = "opensearch"
) -> list[Probe]:
    """Every probe, in pipeline order; the search probe on the server of ``search_backend``."""
    from deploy.local.services import search_service

    return [
        probe_mqtt(endpoints["mosquitto"]),
        probe_kafka(endpoints["kafka"]),
        probe_search(endpoints[search_service(search_backend)], backend=search_backend),
    ]

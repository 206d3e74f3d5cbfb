"""The MQTT side's limits: (a) a bare paho subscriber, (a2) the gateway's own reader alone.

Both drain the same queued messages as the gateway does in (c), on the same
shared-subscription filters with the same Receive Maximum, and acknowledge
each message at once: no bridge, no Kafka.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from benchmarks.gateway.gateways import GatewayProc
from benchmarks.gateway.workload import RECEIVE_MAXIMUM, Fleet, cpu_self, end_session
from deploy.local.pki import ClientTls
from deploy.local.stack import LocalStack

__all__ = ["BareSubscriber", "bench_bare_subscriber", "bench_gateway_reader"]


class BareSubscriber:
    def __init__(
        self, host: str, port: int, tls: ClientTls, group: str, client_id: str, prefix: str
    ) -> None:
        self.host, self.port, self.tls = host, port, tls
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
        self.tls.apply(c)  # TLS; the gateway's certificate is the login
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
        stack.client_tls("gateway").port,  # a service: the TLS password port
        stack.client_tls("gateway"),
        f"bare{run}",
        f"gateway:bare-{run}",
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

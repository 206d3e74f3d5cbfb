"""The gateway benchmark's workload: its devices, their messages, the broker sessions.

Every measurement of :mod:`benchmarks.gateway.bench` drains the same kind
of queue: ``DEVICES`` fresh MQTT users publish N contract readings at QoS 1
into persistent sessions, with the in-flight bound (``RECEIVE_MAXIMUM``) and
the partitions (``PARTITIONS``) the gateway uses.
"""

from __future__ import annotations

import json
import os
import resource
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from deploy.local.pki import ClientTls
from deploy.local.stack import LocalStack

__all__ = [
    "DEVICES",
    "PARTITIONS",
    "RECEIVE_MAXIMUM",
    "Fleet",
    "cpu_of",
    "cpu_self",
    "end_session",
    "payload",
]

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
        #: Each device's TLS login (its client certificate from the stack's CA).
        self.tls = {d: stack.client_tls(d) for d in self.devices}
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
            t = threading.Thread(target=_publish, args=(host, port, device, self.tls[device], mine))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        return time.perf_counter() - started


def _publish(
    host: str, port: int, user: str, tls: ClientTls, messages: list[tuple[str, bytes]]
) -> None:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=user,  # a device connects only with its own id
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    tls.apply(client)
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
    login = stack.client_tls("gateway")  # a service: TLS and its password
    login.apply(c)
    c.connect(ep["host"], login.port, clean_start=True)  # expiry 0: gone at disconnect
    c.loop_start()
    c.disconnect()
    c.loop_stop()

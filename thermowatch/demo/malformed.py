"""The malformed burst: payloads the gateway must dead-letter, never store.

Published straight to MQTT under a real device's name and topic (so the
broker's ACL lets them through), each of a kind the contract refuses: a wrong
type, another device's id, not JSON, binary garbage, an unknown schema
version, out of range, an hour in the future, missing fields. Their seqs
start at :data:`MALFORMED_SEQ`, which no outbox ever allocates, so a stored
one is easy to find.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["MALFORMED_SEQ", "malformed_payloads", "publish_malformed"]

#: Seqs at or above this are the malformed burst's (never allocated by an outbox).
MALFORMED_SEQ = 900_000_000


def malformed_payloads(device: str, other_device: str, site: str, n: int) -> list[bytes]:
    """``n`` payloads the gateway must dead-letter (never store), cycling through kinds.

    >>> ps = malformed_payloads("s2-d10", "s2-d01", "s2", 6)
    >>> len(ps), ps[0][:8]
    (6, b'{"type":')
    """
    now = time.time_ns() // 1_000_000

    def reading(**over: Any) -> bytes:
        doc: dict[str, Any] = {
            "type": "reading",
            "schema_version": 1,
            "device_id": device,
            "sensor_id": "host",
            "site": site,
            "seq": MALFORMED_SEQ,
            "ts": now,
            "temp_c": 21.0,
            "quality": "ok",
            "is_anomaly": False,
        }
        doc.update(over)
        return json.dumps(doc).encode()

    kinds: list[Callable[[int], bytes]] = [
        lambda i: reading(seq=MALFORMED_SEQ + i, temp_c="hot"),  # wrong type
        lambda i: reading(seq=MALFORMED_SEQ + i, device_id=other_device),  # not the topic's device
        lambda i: b"{not json at all " + str(i).encode(),
        lambda i: bytes([0xFF, 0xFE, 0x00, i % 256]) * 8,  # binary garbage
        lambda i: reading(seq=MALFORMED_SEQ + i, schema_version=99),  # unknown version
        lambda i: reading(seq=MALFORMED_SEQ + i, temp_c=999.0),  # out of range
        lambda i: reading(seq=MALFORMED_SEQ + i, ts=now + 3_600_000),  # an hour in the future
        lambda i: json.dumps({"type": "reading", "seq": MALFORMED_SEQ + i}).encode(),  # missing
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


def publish_malformed(
    mqtt: Mapping[str, Any], device: str, topic: str, payloads: Sequence[bytes], run_id: str
) -> int:
    """Publish ``payloads`` on ``device``'s topic (QoS 1); returns how many the broker accepted.

    Published by the stack's operator account (``admin``): a device may connect
    only with its own id as client id, so logging in as ``device`` would take
    over the running agent's connection."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from deploy.local.pki import client_tls

    accepted: list[bool] = []
    done = threading.Event()
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"admin:demo-junk-{device}-{run_id}",
        protocol=paho.MQTTv5,
    )
    tls = client_tls(mqtt, "admin")  # a service: TLS and its password
    tls.apply(client)

    def on_publish(_c: Any, _u: Any, _mid: int, rc: Any, _p: Any) -> None:
        accepted.append(not rc.is_failure)
        if len(accepted) >= len(payloads):
            done.set()

    client.on_publish = on_publish
    client.connect(str(mqtt["host"]), tls.port)
    client.loop_start()
    try:
        for p in payloads:
            client.publish(topic, p, qos=1)
        done.wait(30)
    finally:
        client.disconnect()
        client.loop_stop()
    return sum(accepted)

"""Load generator of the end-to-end benchmark: simulated devices publishing QoS 1.

Each worker process owns some devices, one MQTT v5 connection per device
(username = device id, as the edge agent logs in), and publishes contract
:class:`~telemetry_contract.Reading` messages on
``thermowatch/<site>/<device>/telemetry`` with QoS 1, paced to its share of
the offered rate. Pacing is batched: every ``tick_s`` the worker publishes
as many readings as the rate says are due, so a short stall is caught up in
one burst rather than lost. Event time is the wall clock at the moment the
reading is handed to paho (``ts`` = send time); seqs are contiguous per
device over the whole run (all steps).

Per step the worker reports what it really did: readings handed to paho,
readings the broker acknowledged (PUBACK) inside the step window, how far it
fell behind its schedule, the anomalous readings it sent (device, seq, ts)
and, streamed while the step runs, a sample of (document id, ts) pairs for
the searchability probe.

>>> due(1000.0, 0.5, 0)
500
>>> due(1000.0, 0.5, 480)
20
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from typing import Any

#: Temperature of a normal reading and of an anomalous one (above the
#: benchmark's threshold rule, which opens an alert on a single reading).
NORMAL_C = 20.0
ANOMALY_C = 60.0


def due(rate: float, elapsed_s: float, sent: int) -> int:
    """How many readings are due now: the schedule minus what was sent."""
    return max(0, int(rate * elapsed_s) - sent)


@dataclass
class Device:
    """One simulated device and its MQTT connection."""

    device_id: str
    site: str
    topic: str
    client: Any = None
    seq: int = 0
    acked: int = 0
    connected: threading.Event = field(default_factory=threading.Event)
    anomaly_pending: bool = False


def _connect(dev: Device, password: str, host: str, port: int, run_id: str) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"e2e-{run_id}-{dev.device_id}",
        protocol=paho.MQTTv5,
    )
    client.username_pw_set(dev.device_id, password)
    client.max_inflight_messages_set(200)

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            dev.connected.set()

    def on_publish(_c: Any, _u: Any, _mid: int, rc: Any, _p: Any) -> None:
        # Called on this client's own network thread only: no lock needed.
        if not rc.is_failure:
            dev.acked += 1

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect(host, port, keepalive=30)
    client.loop_start()
    dev.client = client


def worker_main(
    index: int,
    devices: Sequence[tuple[str, str]],
    passwords: dict[str, str],
    host: str,
    port: int,
    run_id: str,
    conn: Connection,
    samples: Queue[tuple[str, int]],
) -> None:
    """Entry point of one worker process (driven by commands on ``conn``)."""
    from telemetry_contract import Reading, TopicKind, encode, mqtt_topic

    devs = [Device(d, s, mqtt_topic(s, d, TopicKind.TELEMETRY)) for d, s in devices]
    for dev in devs:
        _connect(dev, passwords[dev.device_id], host, port, run_id)
    for dev in devs:
        if not dev.connected.wait(30):
            conn.send({"error": f"{dev.device_id} could not connect"})
            return
    conn.send({"ready": index})
    rr = 0  # round-robin position over devs
    while True:
        cmd = conn.recv()
        if cmd.get("stop"):
            break
        rate = float(cmd["rate"])
        seconds = float(cmd["seconds"])
        anomaly_every = float(cmd["anomaly_every_s"])
        sample_every = float(cmd["sample_every_s"])
        tick = float(cmd.get("tick_s", 0.005))
        start_at = float(cmd["start_at"])  # wall clock, shared by every worker
        acked0 = sum(d.acked for d in devs)
        anomalies: list[tuple[str, int, int]] = []
        sent = 0
        max_behind = 0
        time.sleep(max(0.0, start_at - time.time()))
        t0 = time.monotonic()
        # Stagger the workers' anomalies and samples across the interval.
        next_anomaly = t0 + anomaly_every * (0.5 + index / 16)
        next_sample = t0 + sample_every * (index + 1) / 8
        while True:
            now = time.monotonic()
            elapsed = now - t0
            if elapsed >= seconds:
                break
            n = due(rate, elapsed, sent)
            max_behind = max(max_behind, n)
            for _ in range(n):
                dev = devs[rr]
                rr = (rr + 1) % len(devs)
                dev.seq += 1
                temp = NORMAL_C + (dev.seq % 7) * 0.1
                anomalous = False
                if dev.anomaly_pending:
                    dev.anomaly_pending = False  # this normal reading resolves the alert
                elif anomaly_every > 0 and now >= next_anomaly:
                    next_anomaly += anomaly_every
                    temp, anomalous = ANOMALY_C, True
                    dev.anomaly_pending = True
                ts = time.time_ns() // 1_000_000
                payload = encode(
                    Reading(
                        device_id=dev.device_id,
                        sensor_id="host",
                        site=dev.site,
                        seq=dev.seq,
                        ts=ts,
                        temp_c=temp,
                    )
                )
                dev.client.publish(dev.topic, payload, qos=1)
                if anomalous:
                    anomalies.append((dev.device_id, dev.seq, ts))
                elif sample_every > 0 and now >= next_sample:
                    next_sample += sample_every
                    samples.put((f"{dev.device_id}:{dev.seq}", ts))
            sent += n
            time.sleep(tick)
        window_s = time.monotonic() - t0
        acked_in_window = sum(d.acked for d in devs) - acked0
        # Let the broker acknowledge the tail before the next step (bounded).
        deadline = time.monotonic() + 15.0
        while sum(d.acked for d in devs) - acked0 < sent and time.monotonic() < deadline:
            time.sleep(0.01)
        conn.send(
            {
                "sent": sent,
                "acked_in_window": acked_in_window,
                "acked_total": sum(d.acked for d in devs) - acked0,
                "window_s": window_s,
                "max_behind": max_behind,
                "anomalies": anomalies,
            }
        )
    for dev in devs:
        dev.client.disconnect()
        dev.client.loop_stop()
    conn.send({"stopped": index})

"""Receipts benchmark: gateway throughput with receipts on vs off, and receipt traffic.

Not a test. Runs against the local stack (started if it is not up) and
prints a JSON summary:

* **throughput ratio**: the gateway (one process, ``python -m gateway run``)
  drains the same kind of queued burst (:mod:`benchmarks.gateway.gateways`)
  with ``[receipts] enabled = false`` and ``true``, alternating the order in
  each pair (off/on, then on/off), in one invocation; the ratio is the
  median of the on runs over the median of the off runs;
* **bytes per reading at a burst**: receipt bytes (MQTT PUBLISH packets, as
  the gateway's ``receipt_bytes`` counter counts them) over readings, from
  those same "on" runs;
* **bytes per reading at 1 reading/s per device**: a live fleet of
  ``--devices`` devices each publishing one reading a second for
  ``--seconds`` through a gateway with receipts on.

    python benchmarks/gateway/receipts.py --messages 20000 --pairs 3 --devices 20 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the benchmarks package of this checkout (not installed)

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402

from benchmarks.gateway.gateways import GatewayProc, bench_gateways, wait_until  # noqa: E402
from benchmarks.gateway.workload import Fleet, end_session, payload  # noqa: E402
from deploy.local.stack import LocalStack  # noqa: E402
from gateway.receipts import publish_bytes  # noqa: E402

RECEIPTS = {"off": "[receipts]\nenabled = false", "on": "[receipts]\nenabled = true"}


class ReceiptCounter:
    """Counts the receipts for one site's devices (the benchmark's own: the shared
    broker may carry other devices' traffic, which the gateway's counters include)."""

    def __init__(self, stack: LocalStack, site: str) -> None:
        ep = stack.endpoints()["mosquitto"]
        self.receipts = 0
        self.bytes = 0
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"gateway:rcptcount-{site}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        login = stack.client_tls("gateway")  # a service: TLS and its password
        login.apply(self.client)
        self.client.on_connect = lambda c, *_a: c.subscribe(f"thermowatch/{site}/+/receipt")
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_message = self._count
        self.client.connect(ep["host"], login.port)
        self.client.loop_start()
        if not subscribed.wait(30):
            raise TimeoutError("receipt counter could not subscribe")

    def _count(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.receipts += 1
            self.bytes += publish_bytes(msg.topic, msg.payload)

    def close(self) -> tuple[int, int]:
        self.client.disconnect()
        self.client.loop_stop()
        return self.receipts, self.bytes


def burst_pairs(stack: LocalStack, n: int, pairs: int, workdir: Path) -> dict[str, Any]:
    """Alternate off/on gateway runs on fresh fleets; the ratio and bytes per reading."""
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for i in range(pairs):
        for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
            run = uuid.uuid4().hex[:6]
            fleet = Fleet(stack, run, n)
            counter = ReceiptCounter(stack, fleet.site)
            try:
                result = bench_gateways(stack, fleet, run, 1, workdir, RECEIPTS[mode])
                time.sleep(1.0)  # the last receipts
            finally:
                own = counter.close()
            result["own_receipts"], result["own_receipt_bytes"] = own
            runs[mode].append(result)
            print(f"pair {i + 1} {mode}: {json.dumps(result)}", file=sys.stderr, flush=True)
    per_s = {mode: statistics.median(r["per_s"] for r in rs) for mode, rs in runs.items()}
    cpu = {mode: statistics.median(r["cpu_us_per_msg"] for r in rs) for mode, rs in runs.items()}
    on = runs["on"]
    return {
        "messages": n,
        "per_s_off": [r["per_s"] for r in runs["off"]],
        "per_s_on": [r["per_s"] for r in on],
        "cpu_us_per_msg_off": [r["cpu_us_per_msg"] for r in runs["off"]],
        "cpu_us_per_msg_on": [r["cpu_us_per_msg"] for r in on],
        "missing_in_kafka": sum(r["missing_in_kafka"] for rs in runs.values() for r in rs),
        "ratio_on_to_off": round(per_s["on"] / per_s["off"], 3),
        # Throughput per CPU second: the steadier figure on a shared machine.
        "cpu_ratio_off_to_on": round(cpu["off"] / cpu["on"], 3),
        "receipts_per_reading": round(sum(r["own_receipts"] for r in on) / (n * len(on)), 4),
        "receipt_bytes_per_reading": round(
            sum(r["own_receipt_bytes"] for r in on) / (n * len(on)), 3
        ),
        "receipts_when_off": sum(r["own_receipts"] for r in runs["off"]),
    }


def steady(stack: LocalStack, devices: int, seconds: float, workdir: Path) -> dict[str, Any]:
    """``devices`` devices at 1 reading/s each through one gateway with receipts on."""
    run = uuid.uuid4().hex[:6]
    site, names = f"r{run}", [f"rcpt{run}-{i}" for i in range(devices)]
    for d in names:
        stack.add_mqtt_user(d)  # a user, its ACL entry and its client certificate
    gw = GatewayProc(workdir, f"rcpt-{run}", stack, f"rc{run}", "", RECEIPTS["on"])
    gw.start()
    ep = stack.endpoints()["mosquitto"]
    clients = []
    counter = ReceiptCounter(stack, site)
    try:
        wait_until(gw.ready, 120)
        for d in names:
            c = mqtt.Client(
                callback_api_version=CallbackAPIVersion.VERSION2,
                client_id=d,  # a device connects only with its own id
                protocol=MQTTProtocolVersion.MQTTv5,
            )
            stack.client_tls(d).apply(c)
            c.connect(ep["host"], ep["port"])
            c.loop_start()
            clients.append(c)
        stop = time.monotonic() + seconds
        sent = 0
        start = time.monotonic()
        while time.monotonic() < stop:
            ts = int(time.time() * 1000)
            for d, c in zip(names, clients, strict=True):  # one reading per device per second
                c.publish(f"thermowatch/{site}/{d}/telemetry", payload(d, site, sent, ts), qos=1)
            sent += 1
            time.sleep(max(0.0, start + sent - time.monotonic()))
        total = sent * devices
        wait_until(lambda: gw.metrics().get("thermowatch_gateway_forwarded_total", 0) >= total, 60)
        time.sleep(1.0)  # the last receipts (interval 0.2 s)
    finally:
        receipts, size = counter.close()
        for c in clients:
            c.disconnect()
            c.loop_stop()
        gw.stop()
        end_session(stack, f"gateway:rcpt-{run}")
    return {
        "devices": devices,
        "seconds": seconds,
        "readings": total,
        "receipts_per_reading": round(receipts / total, 4),
        "receipt_bytes_per_reading": round(size / total, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=20000, help="readings per burst run")
    ap.add_argument("--pairs", type=int, default=3, help="off/on pairs (order alternates)")
    ap.add_argument("--devices", type=int, default=20, help="devices at 1 reading/s")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the 1 reading/s run")
    args = ap.parse_args()
    stack = LocalStack()
    stack.up(["mosquitto", "kafka"])
    out: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        out["burst"] = burst_pairs(stack, args.messages, args.pairs, Path(tmp))
        out["one_per_s"] = steady(stack, args.devices, args.seconds, Path(tmp))
    out["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""(c) The gateway itself, as 1 or 2 processes (``python -m gateway run``).

Each process gets a config of its own (one share group, one topic prefix per
measurement); throughput runs from the first message it received to the
last one it acknowledged, read from its ``/metrics``, and every (device,
seq) is read back from Kafka to check that nothing was lost.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w
from aiokafka import AIOKafkaConsumer

from benchmarks.gateway.workload import (
    DEVICES,
    PARTITIONS,
    RECEIVE_MAXIMUM,
    Fleet,
    cpu_of,
    end_session,
)
from deploy.local.stack import LocalStack, free_port
from stagekit.kafka import KafkaTarget, settings_for
from telemetry_contract import kafka_topics
from testsupport.kafka_config import kafka_toml

__all__ = ["GatewayProc", "bench_gateways", "histogram_quantile", "read_back", "wait_until"]

REPO = Path(__file__).resolve().parents[2]


class GatewayProc:
    def __init__(
        self,
        workdir: Path,
        gid: str,
        stack: LocalStack,
        prefix: str,
        group: str,
        extra: str = "",
        kafka: Mapping[str, Any] | None = None,
    ) -> None:
        ep = stack.endpoints()
        kafka = kafka or ep["kafka"]
        self.gid = gid
        self.port = free_port()
        self.config = workdir / f"{gid}.toml"
        self.log = workdir / f"{gid}.log"
        self.config.write_text(f"""
[gateway]
id = "{gid}"
[mqtt]
host = "{ep["mosquitto"]["host"]}"
port = {stack.client_tls("gateway").port}
username = "gateway"
password = "{stack.client_tls("gateway").password}"
share_group = "{group}"
receive_maximum = {RECEIVE_MAXIMUM}
[mqtt.tls]
{tomli_w.dumps(stack.client_tls("gateway").tls_block())}
[kafka]
{kafka_toml(kafka, "gateway")}
topic_prefix = "{prefix}"
partitions = {PARTITIONS}
[http]
host = "127.0.0.1"
port = {self.port}
{extra}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "--log-level",
                    "WARNING",
                    "run",
                    "--config",
                    str(self.config),
                ],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def metrics(self) -> dict[str, float]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("#") or not line:
                continue
            name, value = line.rsplit(" ", 1)
            out[name] = out.get(name, 0.0) + float(value)
            base = name.split("{", 1)[0]
            if base != name and "_bucket" not in name:
                out[base] = out.get(base, 0.0) + float(value)
        return out

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def histogram_quantile(q: float, m: dict[str, float]) -> float | None:
    buckets = sorted(
        (
            float("inf")
            if k.split('le="')[1].rstrip('"}') == "+Inf"
            else float(k.split('le="')[1].rstrip('"}')),
            v,
        )
        for k, v in m.items()
        if k.startswith("thermowatch_gateway_kafka_produce_seconds_bucket")
    )
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_n = 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_n) / max(n - prev_n, 1e-9)
        prev_le, prev_n = le, n
    return None


def bench_gateways(
    stack: LocalStack,
    fleet: Fleet,
    run: str,
    count: int,
    workdir: Path,
    extra: str = "",
    kafka: Mapping[str, Any] | None = None,
    tag: str = "",
) -> dict[str, Any]:
    """``extra``: config text appended to each gateway's (e.g. a ``[receipts]`` table);
    ``kafka``: another Kafka endpoint than the stack's (``tag`` keeps its names apart)."""
    kafka = kafka or stack.endpoints()["kafka"]
    prefix, group = f"gw{count}{tag}{run}", f"gw{count}{tag}{run}"
    procs = [
        GatewayProc(workdir, f"bench{count}{tag}-{i}-{run}", stack, prefix, group, extra, kafka)
        for i in range(count)
    ]
    for p in procs:  # create the sessions and subscriptions, then go away
        p.start()
    for p in procs:
        wait_until(p.ready, 120)
    for p in procs:
        p.stop()
    ep = stack.endpoints()["mosquitto"]
    fleet.publish_all(ep["host"], ep["port"])
    n = len(fleet.messages)
    for p in procs:
        p.start()
    first = last = None
    cpu0: list[float] = []
    cpu1: list[float] = []
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        ms = [p.metrics() for p in procs]
        received = sum(m.get("thermowatch_gateway_received_total", 0) for m in ms)
        acked = sum(m.get("thermowatch_gateway_forwarded_total", 0) for m in ms)
        now = time.perf_counter()
        if first is None and received > 0:
            first = now
            cpu0 = [cpu_of(p.proc.pid) for p in procs if p.proc]
        if acked >= n:
            last = now
            cpu1 = [cpu_of(p.proc.pid) for p in procs if p.proc]
            break
        time.sleep(0.02)
    ms = [p.metrics() for p in procs]
    for p in procs:
        p.stop()
        end_session(stack, f"gateway:{p.gid}")
    assert first is not None and last is not None, "gateway did not finish"
    merged: dict[str, float] = {}
    for m in ms:
        for k, v in m.items():
            merged[k] = merged.get(k, 0.0) + v
    seqs = asyncio.run(read_back(kafka, kafka_topics(prefix).telemetry, n))
    expected = {(d.encode(), s) for d in fleet.devices for s in range(n // DEVICES)}
    missing = expected - seqs
    p50 = histogram_quantile(0.5, merged)
    p99 = histogram_quantile(0.99, merged)
    return {
        "processes": count,
        "messages": n,
        "seconds": round(last - first, 3),
        "per_s": round(n / (last - first), 1),
        # From the first message seen (polled every 20 ms) to the last acknowledged.
        "cpu_us_per_msg": round((sum(cpu1) - sum(cpu0)) / n * 1e6, 1),
        "missing_in_kafka": len(missing),
        "per_process_forwarded": [m.get("thermowatch_gateway_forwarded_total", 0) for m in ms],
        "produce_latency_ms_p50": None if p50 is None else round(p50 * 1000, 2),
        "produce_latency_ms_p99": None if p99 is None else round(p99 * 1000, 2),
        "receipts_sent": merged.get("thermowatch_gateway_receipts_sent_total", 0),
        "receipt_bytes": merged.get("thermowatch_gateway_receipt_bytes_total", 0),
    }


async def read_back(kafka: KafkaTarget, topic: str, n: int) -> set[tuple[bytes, int]]:
    consumer = AIOKafkaConsumer(
        topic,
        **settings_for(kafka).client_options(),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: set[tuple[bytes, int]] = set()
    total = 0
    try:
        idle = 0
        while idle < 10:
            batches = await consumer.getmany(timeout_ms=500, max_records=10000)
            got = sum(len(v) for v in batches.values())
            idle = idle + 1 if got == 0 else 0
            for recs in batches.values():
                for r in recs:
                    total += 1
                    seen.add((r.key, json.loads(r.value)["seq"]))
            if len(seen) >= n and got == 0:
                break
    finally:
        await consumer.stop()
    return seen


def wait_until(pred: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.1)

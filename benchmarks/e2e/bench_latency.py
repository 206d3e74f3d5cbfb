"""End-to-end latency benchmark: device publish -> searchable, and -> webhook.

Runs the real pipeline on this machine against the shared local stack
(``thermowatch stack up``): one or more gateway processes and one processor
process, started with ``thermowatch.demo``'s config builders and process
wrapper under their own Kafka topic prefix, consumer group, index prefix and
MQTT share group. Worker processes (``loadgen.py``) play the devices
``e2e-d01``.. (MQTT users added to the stack on first use) and publish
contract readings with QoS 1 at each offered rate for ``--seconds``.

Measured per offered rate:

(a) **event time -> searchable**: a sample of readings (``--samples-per-s``)
    is polled every ``--poll-ms`` with a ``_search`` ``ids`` query (no
    refresh forced), so a document counts only once a refresh has made it
    visible to search; latency = time the answer that first contained it
    arrived - the reading's ``ts`` (its send time).
(b) **anomalous reading -> webhook received**: ``--anomalies-per-s``
    readings at 60 degC (the benchmark's ``threshold_high_c`` is 50 with
    ``min_duration_s`` 0, so one reading opens an alert; the device's next
    reading resolves it). A local HTTP receiver records when each
    ``opened`` change arrives; it is matched to the reading by
    ``(device_id, opened_at == ts)``.

Then, with ``--find-max``, higher rates (``--max-rates``) are tried until
p99 (b) reaches 1 s or the generator cannot deliver 95 % of the offered rate.
Everything the run created (Kafka topics and consumer group, indices and
templates) is deleted at the end.

    python benchmarks/e2e/bench_latency.py --rates 200,1000,5000 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import multiprocessing as mp
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import loadgen
import msgspec

from deploy.local.stack import LocalStack, free_port
from telemetry_contract import kafka_topics
from thermowatch.accounting import percentiles
from thermowatch.demo import DemoRun, Service, gateway_config, processor_config

log = logging.getLogger("bench_e2e")

HERE = Path(__file__).resolve().parent
_BULK = "thermowatch_processor_bulk_latency_seconds"
REPO = HERE.parent.parent


# Webhook receiver ---------------------------------------------------------------------


class WebhookSink:
    """A tiny HTTP server that records when each alert change arrives."""

    def __init__(self) -> None:
        self.changes: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received = time.time_ns() // 1_000_000
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()
                try:
                    change = json.loads(body)
                except ValueError:
                    return
                change["_received_ms"] = received
                with sink._lock:
                    sink.changes.append(change)

            def log_message(self, *_a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> None:
        self.thread.start()

    def opened(self) -> dict[tuple[str, int], int]:
        """``(device_id, opened_at) -> first receive time`` of ``opened`` changes."""
        out: dict[tuple[str, int], int] = {}
        with self._lock:
            for c in self.changes:
                if c.get("change") == "opened" and c.get("rule") == "threshold_high":
                    key = (str(c["device_id"]), int(c["opened_at"]))
                    out[key] = min(out.get(key, c["_received_ms"]), c["_received_ms"])
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# Searchability probe ------------------------------------------------------------------


class SearchProbe:
    """Polls ``_search`` for sampled document ids until each becomes visible."""

    def __init__(self, url: str, pattern: str, queue: Any, poll_s: float) -> None:
        import requests

        self._url = f"{url}/{pattern}/_search"
        self._queue = queue
        self._poll_s = poll_s
        self._session = requests.Session()
        self.pending: dict[str, int] = {}
        self.found: list[tuple[str, int, int]] = []  # id, ts, found_ms
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _drain_queue(self) -> None:
        while True:
            try:
                doc_id, ts = self._queue.get_nowait()
            except Exception:  # queue.Empty (multiprocessing raises the stdlib one)
                return
            self.pending[doc_id] = ts

    def _run(self) -> None:
        while not self._stop.is_set():
            self._drain_queue()
            if self.pending:
                ids = list(self.pending)[:1000]
                body = {"size": len(ids), "_source": False, "query": {"ids": {"values": ids}}}
                try:
                    resp = self._session.post(
                        self._url,
                        json=body,
                        params={"ignore_unavailable": "true", "allow_no_indices": "true"},
                        timeout=10,
                    )
                    answered = time.time_ns() // 1_000_000
                    hits = resp.json().get("hits", {}).get("hits", []) if resp.ok else []
                    if not resp.ok:
                        self.errors += 1
                    resp.close()
                except Exception:
                    self.errors += 1
                    hits = []
                for h in hits:
                    ts = self.pending.pop(h["_id"], None)
                    if ts is not None:
                        self.found.append((h["_id"], ts, answered))
            self._stop.wait(self._poll_s)

    def samples_empty(self) -> bool:
        """Whether every streamed sample has been picked up (approximate)."""
        return bool(self._queue.empty())

    def take(self) -> list[tuple[str, int, int]]:
        """Found samples so far (and forget them)."""
        out, self.found = self.found, []
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(15)
        self._session.close()


# Process CPU ---------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (and its reaped children) from /proc."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


# Kafka and search helpers ------------------------------------------------------------


async def create_log_append_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    """Create the run's topics with broker (append) timestamps, so a record's time
    says when Kafka had it rather than when a producer built it."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    n,
                    num_partitions=partitions,
                    replication_factor=1,
                    topic_configs={"message.timestamp.type": "LogAppendTime"},
                )
                for n in names
            ]
        )
    finally:
        await admin.close()


async def _topics_exist(bootstrap: str, names: Iterable[str]) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(names) <= set(await admin.list_topics())
    finally:
        await admin.close()


async def _alert_record_times(bootstrap: str, topic: str) -> dict[tuple[str, int], int]:
    """``(device_id, opened_at) -> Kafka timestamp`` of ``opened`` changes on the alerts topic."""
    from thermowatch.accounting import read_records

    out: dict[tuple[str, int], int] = {}
    for value, ts in await read_records(bootstrap, topic):
        try:
            c = json.loads(value)
        except ValueError:
            continue
        if c.get("change") == "opened" and c.get("rule") == "threshold_high":
            key = (str(c["device_id"]), int(c["opened_at"]))
            out[key] = min(out.get(key, ts), ts)
    return out


class _Key(msgspec.Struct):
    device_id: str
    seq: int


async def _anomaly_record_times(
    bootstrap: str, topic: str, budget_s: float, anomalies: Iterable[tuple[str, int]]
) -> tuple[dict[tuple[str, int], int], set[tuple[str, int]], bool]:
    """Read the telemetry topic back: ``(device_id, ts) -> Kafka timestamp`` of the
    anomalous readings (broker append time), the ``(device_id, seq)`` of anomalies
    that a later reading of the same device overtook in Kafka (a lower offset in the
    device's partition: the processor then sees the anomaly as out of date and does
    not evaluate threshold rules on it), and whether the
    whole topic was read in ``budget_s``."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    from thermowatch.accounting import topic_partitions

    needle = f'"temp_c":{loadgen.ANOMALY_C}'.encode()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        tps = topic_partitions(await admin.describe_topics([topic]))
    finally:
        await admin.close()
    out: dict[tuple[str, int], int] = {}
    wanted = set(anomalies)
    newest: dict[str, int] = {}  # device -> highest seq so far, in offset order
    overtaken: set[tuple[str, int]] = set()
    key_of = msgspec.json.Decoder(_Key)
    if not tps:
        return out, set(), True
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    deadline = time.monotonic() + budget_s
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        todo = {tp for tp in tps if ends[tp] > 0}
        while todo and time.monotonic() < deadline:
            batch = await consumer.getmany(*todo, timeout_ms=1000, max_records=20_000)
            for records in batch.values():
                for r in records:
                    if r.value is None:
                        continue
                    if needle in r.value:
                        msg = json.loads(r.value)
                        out[(str(msg["device_id"]), int(msg["ts"]))] = int(r.timestamp)
                    try:
                        k = key_of.decode(r.value)
                    except msgspec.DecodeError:
                        continue
                    top = newest.get(k.device_id, -1)
                    if (k.device_id, k.seq) in wanted and top > k.seq:
                        overtaken.add((k.device_id, k.seq))
                    newest[k.device_id] = max(top, k.seq)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
        return out, overtaken, not todo
    finally:
        await consumer.stop()


async def cleanup(endpoints: Mapping[str, Any], run: DemoRun) -> dict[str, Any]:
    """Delete this run's topics, consumer group, indices and index templates (only ours)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from stagekit.kafka import delete_topics
    from stagekit.search import api as search
    from stagekit.search.api import SearchError
    from stagekit.search.backends import OpenSearchBackend
    from stagekit.search.indices import INDEXES, IndexNames

    done: dict[str, Any] = {}
    bootstrap = endpoints["kafka"]["bootstrap"]
    topics = kafka_topics(run.kafka_prefix)
    await delete_topics(bootstrap, topics.all())
    done["topics"] = list(topics.all())
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        from aiokafka.protocol.admin import DeleteGroupsRequest

        node = await admin.find_coordinator(run.group_id)
        resp = await admin._send_request_to_node(node, DeleteGroupsRequest([run.group_id]))
        done["group"] = {"name": run.group_id, "results": repr(getattr(resp, "results", resp))}
    except Exception as exc:  # an old broker or a group already gone
        done["group_error"] = repr(exc)
    finally:
        await admin.close()
    names = IndexNames(run.index_prefix)
    backend = OpenSearchBackend(endpoints["search"]["url"])
    try:
        with contextlib.suppress(SearchError):
            await backend.perform(search.delete_index(f"{names.prefix}*"))
        for spec in INDEXES:
            with contextlib.suppress(SearchError):
                template = f"/_index_template/{names.base(spec)}"
                await backend.perform(search.Request("DELETE", template))
    finally:
        await backend.close()
    done["indices"] = f"{names.prefix}*"
    return done


def scrape(url: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text page (``{}`` when unreachable)."""
    import requests

    out: dict[str, float] = {}
    try:
        resp = requests.get(url, timeout=5)
    except requests.RequestException:
        return out
    for line in resp.text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    resp.close()
    return out


def count_readings(url: str, pattern: str) -> int:
    import requests

    requests.post(f"{url}/{pattern}/_refresh", timeout=30).close()
    resp = requests.get(f"{url}/{pattern}/_count", timeout=30)
    n = int(resp.json().get("count", 0)) if resp.ok else -1
    resp.close()
    return n


# The benchmark -------------------------------------------------------------------------


def write_toml(path: Path, data: Mapping[str, Any]) -> None:
    import tomli_w

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(dict(data)), encoding="utf-8")
    path.chmod(0o600)  # holds the gateway's MQTT password


def ensure_users(stack: LocalStack, devices: list[str]) -> dict[str, str]:
    users = dict(stack.credentials())
    for d in devices:
        if d not in users:
            users[d] = stack.add_mqtt_user(d)
    return users


def _pct(values: list[float]) -> dict[str, float | None]:
    out = percentiles(values)
    out["max"] = max(values) if values else None
    out["n"] = len(values)
    return out


class Bench:
    """One benchmark run: services, workers, probes, steps."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stack = LocalStack()
        self.endpoints = self.stack.endpoints()
        rid = time.strftime("%Y%m%d%H%M%S", time.gmtime()) + uuid.uuid4().hex[:4]
        self.rid = rid
        self.mqtt_stack: LocalStack | None = None
        if args.mqtt == "private":
            # Every gateway on the shared broker reads thermowatch/# (the ACL
            # allows no other root), so other engineers' traffic would flow
            # through ours and ours through theirs: a private Mosquitto avoids both.
            self.mqtt_stack = LocalStack(
                self.stack.root / "bench-e2e" / rid / "mqtt", mqtt_port=free_port()
            )
        n_sites = max(1, math.ceil(args.devices / 10))
        self.sites = {
            f"e2e{s}": [f"e2e-d{d:02d}" for d in range(10 * s - 9, min(10 * s, args.devices) + 1)]
            for s in range(1, n_sites + 1)
        }
        run_dir = self.stack.root / "bench-e2e" / rid
        self.run = DemoRun(
            run_id=rid,
            run_dir=run_dir,
            w1_dir=run_dir / "w1",
            sites=self.sites,
            duration_s=0.0,
            kafka_prefix=f"e2e.{rid}",
            index_prefix=f"e2e-{rid}-",
            group_id=f"e2e-processor-{rid}",
        )
        self.sink = WebhookSink()
        self.ctx = mp.get_context("spawn")
        self.samples: Any = self.ctx.Queue()
        self.workers: list[tuple[Any, Any]] = []
        self.gateways: list[Service] = []
        self.processor: Service | None = None
        self.anomalies_sent: list[tuple[str, int, int, str]] = []  # device, seq, ts, step
        self.probe: SearchProbe | None = None
        self.processor_http = 0

    # -- configs ---------------------------------------------------------------

    def gateway_toml(self, i: int) -> dict[str, Any]:
        cfg = gateway_config(self.run, self.endpoints)
        cfg["gateway"]["id"] = f"e2e-{self.rid}-{i}"
        cfg["mqtt"]["share_group"] = f"e2e{self.rid}"
        cfg["kafka"]["linger_ms"] = self.args.gateway_linger_ms
        return cfg

    def processor_toml(self) -> dict[str, Any]:
        cfg = processor_config(self.run, self.endpoints)
        cfg["search"]["refresh_interval"] = self.args.refresh_interval
        # The processor's default (the demo commits every second): each commit
        # first recomputes the one-minute windows touched since the last one.
        cfg["kafka"]["commit_interval_s"] = 5.0
        cfg["rules"] = {
            "threshold_high_c": 50.0,
            "min_duration_s": 0.0,
            # Only the threshold rule: fleet outliers would fire on the same readings.
            "outlier_z": 1e9,
        }
        # Every device gets an anomaly every few seconds: never call that flapping
        # (a flapping alert stays open and would swallow the next anomalies).
        cfg["alerts"] = {"flap_max_opens": 1_000_000_000}
        cfg["webhook"] = {
            "url": self.sink.url,
            "timeout_s": 5.0,
            # The default (5/s, burst 10) is for people; the benchmark sends
            # ~2 changes per anomaly and must not measure the token bucket.
            "rate_per_s": 1000.0,
            "burst": 1000,
        }
        self.processor_http = free_port()
        cfg["http"] = {"enabled": True, "host": "127.0.0.1", "port": self.processor_http}
        for key, value in self.args.processor_kafka or []:
            cfg["kafka"][key] = value
        return cfg

    # -- lifecycle -------------------------------------------------------------

    def start_services(self) -> None:
        rd = self.run.run_dir
        rd.mkdir(parents=True, exist_ok=True)
        self.sink.start()
        gw_cfg = self.gateway_toml(0)
        asyncio.run(
            create_log_append_topics(
                self.endpoints["kafka"]["bootstrap"],
                kafka_topics(self.run.kafka_prefix).all(),
                int(gw_cfg["kafka"]["partitions"]),
            )
        )
        pr = rd / "processor.toml"
        write_toml(pr, self.processor_toml())
        self.processor = Service("processor", "cloud_processor", pr, rd / "logs" / "processor.log")
        self.processor.start()
        for i in range(self.args.gateways):
            gw = rd / f"gateway{i}.toml"
            write_toml(gw, self.gateway_toml(i))
            svc = Service(f"gateway{i}", "gateway", gw, rd / "logs" / f"gateway{i}.log")
            svc.start()
            self.gateways.append(svc)
        topics = kafka_topics(self.run.kafka_prefix)
        deadline = time.monotonic() + 120
        while not asyncio.run(
            _topics_exist(self.endpoints["kafka"]["bootstrap"], [topics.telemetry, topics.alerts])
        ):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("gateway/processor did not create their topics in 120 s")
            time.sleep(1.0)

    def check_alive(self) -> None:
        for svc in [*self.gateways, *([self.processor] if self.processor else [])]:
            if not svc.alive:
                raise RuntimeError(f"{svc.name} exited:\n{svc.tail()}")

    def start_workers(self, passwords: dict[str, str]) -> None:
        devices = [(d, site) for site, devs in self.sites.items() for d in devs]
        m = self.endpoints["mosquitto"]
        for i in range(self.args.workers):
            mine = devices[i :: self.args.workers]
            parent, child = self.ctx.Pipe()
            p = self.ctx.Process(
                target=loadgen.worker_main,
                args=(
                    i,
                    mine,
                    {d: passwords[d] for d, _ in mine},
                    m["host"],
                    int(m["port"]),
                    self.rid,
                    child,
                    self.samples,
                ),
                daemon=True,
            )
            p.start()
            self.workers.append((p, parent))
        for p, conn in self.workers:
            if not conn.poll(60):
                raise RuntimeError(f"load worker {p.pid} did not connect in 60 s")
            msg = conn.recv()
            if "error" in msg:
                raise RuntimeError(f"load worker: {msg['error']}")

    def stop(self) -> None:
        for p, conn in self.workers:
            with contextlib.suppress(Exception):
                conn.send({"stop": True})
                if conn.poll(15):
                    conn.recv()
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
        self.workers.clear()
        if self.probe is not None:
            self.probe.close()
        for svc in [*([self.processor] if self.processor else []), *self.gateways]:
            svc.stop()
        self.sink.close()
        if self.mqtt_stack is not None:
            import shutil

            self.mqtt_stack.down(["mosquitto"])
            # The private broker's state (its queue, if the pipeline fell behind).
            shutil.rmtree(self.mqtt_stack.root, ignore_errors=True)

    # -- one step --------------------------------------------------------------

    def step(self, rate: float, seconds: float, label: str, drain_s: float) -> dict[str, Any]:
        a = self.args
        w = len(self.workers)
        pids = {
            "processor": self.processor.proc.pid
            if self.processor and self.processor.proc
            else None,
            **{g.name: g.proc.pid if g.proc else None for g in self.gateways},
            **{k: v.get("pid") for k, v in self.stack.status().items()},
            **(
                {"mosquitto": self.mqtt_stack.status(["mosquitto"])["mosquitto"].get("pid")}
                if self.mqtt_stack is not None
                else {}
            ),
        }
        cpu0 = {k: cpu_seconds(v) for k, v in pids.items()}
        metrics_url = f"http://127.0.0.1:{self.processor_http}/metrics"
        m0 = scrape(metrics_url)
        gen_cpu0 = sum(cpu_seconds(p.pid) or 0.0 for p, _ in self.workers)
        start_at = time.time() + 0.5
        for _p, conn in self.workers:
            conn.send(
                {
                    "rate": rate / w,
                    "seconds": seconds,
                    "anomaly_every_s": w / a.anomalies_per_s if a.anomalies_per_s > 0 else 0,
                    "sample_every_s": w / a.samples_per_s if a.samples_per_s > 0 else 0,
                    "start_at": start_at,
                }
            )
        results: list[dict[str, Any]] = []
        for p, conn in self.workers:
            while not conn.poll(1.0):
                self.check_alive()
                if not p.is_alive():
                    raise RuntimeError(f"load worker {p.pid} died")
            results.append(conn.recv())
        load_during = os.getloadavg()
        step_end = time.monotonic()
        window = max(r["window_s"] for r in results)
        cpu1 = {k: cpu_seconds(v) for k, v in pids.items()}
        m1 = scrape(metrics_url)
        bulk_n = m1.get(_BULK + "_count", 0.0) - m0.get(_BULK + "_count", 0.0)
        bulk_s = m1.get(_BULK + "_sum", 0.0) - m0.get(_BULK + "_sum", 0.0)
        gen_cpu1 = sum(cpu_seconds(p.pid) or 0.0 for p, _ in self.workers)
        anomalies = [(d, s, ts) for r in results for d, s, ts in r["anomalies"]]
        self.anomalies_sent += [(d, s, ts, label) for d, s, ts in anomalies]
        # Drain: wait until every sampled document is searchable and every
        # anomaly has reached the webhook (bounded).
        probe = self.probe
        assert probe is not None
        deadline = step_end + drain_s
        wanted = {(d, ts) for d, _s, ts in anomalies}
        while time.monotonic() < deadline:
            got = self.sink.opened()
            if not probe.pending and probe.samples_empty() and wanted <= got.keys():
                break
            self.check_alive()
            time.sleep(0.25)
        drained_s = time.monotonic() - step_end
        got = self.sink.opened()
        lat_b = [float(got[k] - k[1]) for k in wanted if k in got]
        found = probe.take()
        lat_a = [float(found_ms - ts) for _id, ts, found_ms in found]
        not_found = len(probe.pending)
        probe.pending.clear()
        sent = sum(r["sent"] for r in results)
        acked_in_window = sum(r["acked_in_window"] for r in results)
        out = {
            "label": label,
            "offered_per_s": rate,
            "seconds": seconds,
            "window_s": round(window, 3),
            "published": sent,
            "published_per_s": round(sent / window, 1),
            "acked_in_window_per_s": round(acked_in_window / window, 1),
            "acked_total": sum(r["acked_total"] for r in results),
            "generator_max_behind_ms": round(
                max(r["max_behind"] for r in results) / max(rate / w, 1e-9) * 1000, 1
            ),
            "generator_saturated": acked_in_window < 0.95 * rate * seconds,
            "searchable_ms": _pct(lat_a),
            "searchable_not_found": not_found,
            "webhook_ms": _pct(lat_b),
            "anomalies_sent": len(wanted),
            "webhooks_missing": len(wanted) - len(lat_b),
            "drain_s": round(drained_s, 2),
            "processor_bulk_requests": int(bulk_n),
            "processor_bulk_mean_ms": round(bulk_s / bulk_n * 1000, 1) if bulk_n else None,
            "load_avg_1_5_15": [round(x, 2) for x in load_during],
            "cpu_percent": {
                k: round((cpu1[k] - v) / window * 100, 1)  # type: ignore[operator]
                for k, v in cpu0.items()
                if v is not None and cpu1.get(k) is not None
            }
            | {"load_generator": round((gen_cpu1 - gen_cpu0) / window * 100, 1)},
        }
        return out

    def run_all(self) -> dict[str, Any]:
        a = self.args
        devices = [d for devs in self.sites.values() for d in devs]
        t_start = time.time()
        load_before = os.getloadavg()
        if self.mqtt_stack is not None:
            self.mqtt_stack.up(["mosquitto"])
            self.endpoints = {
                **self.endpoints,
                "mosquitto": self.mqtt_stack.endpoints()["mosquitto"],
            }
        passwords = ensure_users(self.mqtt_stack or self.stack, devices)
        self.endpoints["mosquitto"]["users"] = passwords
        result: dict[str, Any] = {
            "benchmark": "e2e-latency",
            "run_id": self.rid,
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
            "command": " ".join(["python", "benchmarks/e2e/bench_latency.py", *sys.argv[1:]]),
            "machine": {
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "load_avg_before_1_5_15": [round(x, 2) for x in load_before],
            },
            "settings": {
                "devices": a.devices,
                "workers": a.workers,
                "gateways": a.gateways,
                "mqtt": a.mqtt,
                "gateway_linger_ms": a.gateway_linger_ms,
                "refresh_interval": a.refresh_interval,
                "anomalies_per_s": a.anomalies_per_s,
                "samples_per_s": a.samples_per_s,
                "poll_ms": a.poll_ms,
                "processor_kafka": dict(a.processor_kafka or []),
                "kafka_topic_prefix": self.run.kafka_prefix,
                "index_prefix": self.run.index_prefix,
            },
            "steps": [],
        }
        try:
            self.start_services()
            self.probe = SearchProbe(
                self.endpoints["search"]["url"],
                f"{self.run.index_prefix}readings-*",
                self.samples,
                a.poll_ms / 1000,
            )
            self.probe.start()
            self.start_workers(passwords)
            # Warm-up until the whole path answers (subscriptions, group join,
            # index creation); not recorded.
            warmup_published = 0
            for attempt in range(10):
                warm = self.step(50.0, 3.0, f"warmup{attempt}", 10.0)
                warmup_published += warm["published"]
                log.info("warm-up %d: %s", attempt, json.dumps(warm))
                if warm["webhooks_missing"] == 0 and warm["searchable_not_found"] == 0:
                    break
            else:
                raise RuntimeError("the pipeline did not answer during warm-up")
            rates = list(a.rates)
            i = 0
            while i < len(rates):
                rate = rates[i]
                st = self.step(rate, a.seconds, f"{rate:g}", a.drain_s)
                result["steps"].append(st)
                log.info("step %s", json.dumps(st))
                print(_line(st), flush=True)
                i += 1
                if i == len(rates) and a.find_max:
                    p99 = st["webhook_ms"]["p99"]
                    ok = p99 is not None and p99 < 1000 and st["webhooks_missing"] == 0
                    if ok and not st["generator_saturated"]:
                        rates.append(rate * a.step_factor)
            stored = count_readings(
                self.endpoints["search"]["url"], f"{self.run.index_prefix}readings-*"
            )
            result["readings_stored"] = stored
            result["readings_acked"] = sum(s["acked_total"] for s in result["steps"])
            # Every reading the generator sent, warm-up included, is in the index once
            # (a document's _id is device:seq, so a redelivery cannot add one).
            published = warmup_published + sum(s["published"] for s in result["steps"])
            result["readings_published_with_warmup"] = published
            result["readings_missing_in_index"] = published - stored
            alert_ts = asyncio.run(
                _alert_record_times(
                    self.endpoints["kafka"]["bootstrap"],
                    kafka_topics(self.run.kafka_prefix).alerts,
                )
            )
            reading_ts, overtaken, complete = asyncio.run(
                _anomaly_record_times(
                    self.endpoints["kafka"]["bootstrap"],
                    kafka_topics(self.run.kafka_prefix).telemetry,
                    a.split_budget_s,
                    [(d, s) for d, s, _ts, _lab in self.anomalies_sent],
                )
            )
            result["webhook_split_complete"] = complete
            got = self.sink.opened()
            for st in result["steps"]:
                label = st["label"]
                to_gw, gw_to_alert, to_kafka, kafka_to_hook = [], [], [], []
                for d, _s, ts, lab in self.anomalies_sent:
                    key = (d, ts)
                    if lab != label:
                        continue
                    if key in reading_ts:
                        to_gw.append(float(reading_ts[key] - ts))
                        if key in alert_ts:
                            gw_to_alert.append(float(alert_ts[key] - reading_ts[key]))
                    if key in alert_ts:
                        to_kafka.append(float(alert_ts[key] - ts))
                        if key in got:
                            kafka_to_hook.append(float(got[key] - alert_ts[key]))
                mine = [(d, s) for d, s, _ts, lab in self.anomalies_sent if lab == label]
                st["anomalies_overtaken_in_kafka"] = sum(1 for k in mine if k in overtaken)
                st["webhook_split_ms"] = {
                    "send_to_reading_in_kafka (mqtt + gateway)": _pct(to_gw),
                    "reading_in_kafka_to_alert_in_kafka (processor)": _pct(gw_to_alert),
                    "send_to_alert_in_kafka": _pct(to_kafka),
                    "alert_in_kafka_to_webhook (processor: ack + POST)": _pct(kafka_to_hook),
                }
            result["summary"] = summarize(result["steps"])
        finally:
            self.stop()
            result["services_log_dir"] = str(self.run.run_dir / "logs")
            if not a.keep:
                result["cleanup"] = asyncio.run(cleanup(self.endpoints, self.run))
            result["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            result["machine"]["load_avg_after_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
        return result


def _line(st: Mapping[str, Any]) -> str:
    a, b = st["searchable_ms"], st["webhook_ms"]
    return (
        f"offered {st['offered_per_s']:>7g}/s  achieved {st['acked_in_window_per_s']:>8.1f}/s  "
        f"searchable p50/p95/p99 {a['p50']}/{a['p95']}/{a['p99']} ms  "
        f"webhook p50/p95/p99 {b['p50']}/{b['p95']}/{b['p99']} ms  "
        f"(missing {st['webhooks_missing']}, load {st['load_avg_1_5_15'][0]})"
    )


def summarize(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Targets: (b) p99 < 250 ms at 1000/s; highest load with (b) p99 < 1 s."""
    sustainable = [
        s
        for s in steps
        if s["webhook_ms"]["p99"] is not None
        and s["webhook_ms"]["p99"] < 1000
        and s["webhooks_missing"] == 0
        and not s["generator_saturated"]
    ]
    at_1000 = next((s for s in steps if s["offered_per_s"] == 1000), None)
    best = max(sustainable, key=lambda s: s["acked_in_window_per_s"], default=None)
    first_bad = next((s for s in steps if s not in sustainable), None)
    limit = None
    if first_bad is not None:
        limit = (
            "load generator (achieved < 95 % of offered)"
            if first_bad["generator_saturated"]
            else "pipeline (webhook p99 >= 1 s or webhooks missing)"
        )
    return {
        "webhook_p99_at_1000_ms": at_1000["webhook_ms"]["p99"] if at_1000 else None,
        "target_webhook_p99_at_1000_met": bool(
            at_1000
            and at_1000["webhook_ms"]["p99"] is not None
            and at_1000["webhook_ms"]["p99"] < 250
        ),
        "highest_sustainable_offered_per_s": best["offered_per_s"] if best else None,
        "highest_sustainable_achieved_per_s": best["acked_in_window_per_s"] if best else None,
        "target_sustainable_5000_met": bool(best and best["acked_in_window_per_s"] >= 4750),
        "first_failing_step": first_bad["label"] if first_bad else None,
        "limit_hit": limit,
    }


def plot(result: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    steps = result["steps"]
    xs = [s["acked_in_window_per_s"] for s in steps]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for ax, key, title in (
        (axes[0], "searchable_ms", "(a) event time -> searchable"),
        (axes[1], "webhook_ms", "(b) anomalous reading -> webhook"),
    ):
        for q, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^-")):
            ys = [s[key][q] for s in steps]
            ax.plot(xs, ys, style, label=q)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(xs, [f"{x:,.0f}" for x in xs])
        for x, st in zip(xs, steps, strict=True):
            ax.annotate(
                f"load {st['load_avg_1_5_15'][0]:g}",
                (x, st[key]["p50"] or 1),
                textcoords="offset points",
                xytext=(0, -14),
                fontsize=7,
                ha="center",
                color="gray",
            )
        ax.set_xlabel("achieved load (readings/s)")
        ax.set_ylabel("latency (ms)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].axhline(250, color="tab:green", lw=0.8, ls=":", label="250 ms target @1000/s")
    axes[1].axhline(1000, color="tab:red", lw=0.8, ls=":", label="1 s (sustainable)")
    for ax in axes:
        ax.legend(fontsize=8)
    la = result["machine"]["load_avg_before_1_5_15"]
    fig.suptitle(
        f"thermowatch end-to-end latency ({result['started_utc']}, "
        f"{result['machine']['cpus']} cores, load avg before {la[0]})",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _kv(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="200,1000,5000", help="offered readings/s, comma separated")
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds per rate (default 60)")
    ap.add_argument(
        "--find-max", action="store_true", help="step above the last rate until it breaks"
    )
    ap.add_argument("--step-factor", type=float, default=1.5, help="rate multiplier for --find-max")
    ap.add_argument("--devices", type=int, default=30, help="simulated devices (default 30)")
    ap.add_argument("--workers", type=int, default=3, help="load generator processes (default 3)")
    ap.add_argument(
        "--mqtt",
        choices=("private", "shared"),
        default="private",
        help="a private Mosquitto for this run (default) or the shared stack's",
    )
    ap.add_argument("--gateways", type=int, default=1, help="gateway processes (default 1)")
    ap.add_argument("--gateway-linger-ms", type=int, default=5)
    ap.add_argument("--refresh-interval", default="1s", help="search index refresh interval")
    ap.add_argument(
        "--processor-kafka",
        type=_kv,
        action="append",
        metavar="KEY=VALUE",
        help="override a [kafka] setting of the processor (repeatable)",
    )
    ap.add_argument("--anomalies-per-s", type=float, default=4.0)
    ap.add_argument("--samples-per-s", type=float, default=20.0)
    ap.add_argument("--poll-ms", type=float, default=50.0, help="searchability poll period")
    ap.add_argument(
        "--split-budget-s",
        type=float,
        default=60.0,
        help="max seconds to read the telemetry topic back for the latency split",
    )
    ap.add_argument("--drain-s", type=float, default=30.0, help="max wait after each step")
    ap.add_argument("--json", type=Path, help="results file (default results/<timestamp>.json)")
    ap.add_argument("--plot", type=Path, help="PNG plot (default beside the JSON)")
    ap.add_argument("--keep", action="store_true", help="keep topics and indices (debugging)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    args.rates = [float(x) for x in args.rates.split(",") if x]
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    stack = LocalStack()
    status = stack.status()
    down = [k for k, v in status.items() if not v.get("pid")]
    if down:
        print(
            f"bench_latency: error: stack services not running: {down} (thermowatch stack up)",
            file=sys.stderr,
        )
        return 1
    bench = Bench(args)
    result = bench.run_all()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    json_path = args.json or HERE / "results" / f"{stamp}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot_path = args.plot or json_path.with_suffix(".png")
    if result["steps"]:
        plot(result, plot_path)
    print(json.dumps(result.get("summary", {}), indent=2))
    print(f"results: {json_path}\nplot: {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``thermowatch demo``: the main job, one command (``make demo``).

1. Brings the local stack up (installing what is missing) and proves each
   service with a real round trip (:mod:`thermowatch.smoke`).
2. Writes gateway and processor configs into a run directory
   (``<stack dir>/demo/<run id>/``; its own Kafka topic prefix, consumer group,
   index prefix, MQTT share group) and starts both as subprocesses (logs in
   ``logs/``).
3. Runs a simulated fleet, 3 sites x 10 devices at 1 Hz, through scripted
   incidents (:mod:`thermowatch.demo_fleet`): a freezer door left open, a
   fire-like rise, a stuck probe, an agent killed (last will: offline) and
   started again, a burst of malformed payloads published straight to MQTT.
   A live view (rich) shows readings stored per second (search server),
   consumer lag (Kafka) and the open alerts.
4. Stops the fleet, waits until the pipeline is drained, stops gateway and
   processor, and counts everything from where it really is
   (:mod:`thermowatch.accounting`): readings per (device, seq) in the search
   server against the seqs the edge outboxes allocated, Gaps from Kafka,
   alerts from the alerts index, malformed payloads from the dead-letter topic.
   Prints the summary (and writes it with ``--summary``); exits 1 if a
   reading was lost or stored twice.

The stack stays up; ``make demo-down`` (``thermowatch stack down``) stops it.
``thermowatch demo account --run-dir DIR`` repeats the accounting of a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DemoRun",
    "Service",
    "demo_sites",
    "gateway_config",
    "merge_config",
    "pipeline_services",
    "processor_config",
    "register",
    "run_pipeline_demo",
    "wait_topics",
]

log = logging.getLogger(__name__)

#: Seqs at or above this are the malformed burst's (never allocated by an outbox).
MALFORMED_SEQ = 900_000_000


def demo_sites(sites: int = 3, devices: int = 10) -> dict[str, list[str]]:
    """The demo fleet: the MQTT users the local stack creates.

    >>> demo_sites(2, 2)
    {'s1': ['s1-d01', 's1-d02'], 's2': ['s2-d01', 's2-d02']}
    """
    return {f"s{s}": [f"s{s}-d{d:02d}" for d in range(1, devices + 1)] for s in range(1, sites + 1)}


@dataclass
class DemoRun:
    """Names and places of one demo run (everything unique to it)."""

    run_id: str
    run_dir: Path
    w1_dir: Path
    sites: dict[str, list[str]]
    duration_s: float
    kafka_prefix: str = ""
    index_prefix: str = ""
    group_id: str = ""
    started_ms: int = 0
    fleet_stopped_ms: int = 0
    incidents: list[dict[str, Any]] = field(default_factory=list)
    malformed_topic: str = ""
    malformed_sent: int = 0

    def __post_init__(self) -> None:
        self.kafka_prefix = self.kafka_prefix or f"demo.{self.run_id}"
        self.index_prefix = self.index_prefix or f"demo-{self.run_id}-"
        self.group_id = self.group_id or f"demo-processor-{self.run_id}"

    @property
    def devices(self) -> list[str]:
        return [d for devs in self.sites.values() for d in devs]

    def save(self) -> None:
        data = {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in self.__dict__.items()
            if not k.startswith("_")
        }
        (self.run_dir / "run.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, run_dir: Path) -> DemoRun:
        data = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        data["run_dir"] = Path(data["run_dir"])
        data["w1_dir"] = Path(data["w1_dir"])
        return cls(**data)


def new_run(stack_root: Path, sites: dict[str, list[str]], duration_s: float) -> DemoRun:
    rid = time.strftime("%Y%m%d%H%M%S", time.gmtime()) + uuid.uuid4().hex[:4]
    run_dir = stack_root / "demo" / rid
    shm = Path("/dev/shm")  # noqa: S108 - a tmpfs like sysfs; the name is unique per run
    w1_base = shm if shm.is_dir() and os.access(shm, os.W_OK) else run_dir
    return DemoRun(
        run_id=rid,
        run_dir=run_dir,
        w1_dir=w1_base / f"thermowatch-demo-{rid}" / "w1",
        sites=sites,
        duration_s=duration_s,
    )


# Configs ----------------------------------------------------------------------------------


def gateway_config(run: DemoRun, endpoints: Mapping[str, Any]) -> dict[str, Any]:
    m = endpoints["mosquitto"]
    return {
        "gateway": {"id": f"demo-{run.run_id}", "shutdown_grace_s": 10.0},
        "mqtt": {
            "host": m["host"],
            "port": int(m["port"]),
            "username": "gateway",
            "password": m["users"]["gateway"],
            # One gateway: a plain subscription, the only kind Mosquitto 2.0.11
            # keeps across a broker restart (tests/chaos, gateway/README.md).
            "share_group": "",
            "session_expiry_s": 600,
        },
        "kafka": {
            "bootstrap_servers": [endpoints["kafka"]["bootstrap"]],
            "topic_prefix": run.kafka_prefix,
            "partitions": 3,
        },
        "http": {"host": "127.0.0.1", "port": 0},
    }


def processor_config(run: DemoRun, endpoints: Mapping[str, Any]) -> dict[str, Any]:
    names = list(run.sites)
    return {
        "kafka": {
            "bootstrap_servers": endpoints["kafka"]["bootstrap"],
            "topic_prefix": run.kafka_prefix,
            "group_id": run.group_id,
            "client_id": f"demo-processor-{run.run_id}",
            "commit_interval_s": 1.0,
        },
        "search": {
            "url": endpoints["search"]["url"],
            "index_prefix": run.index_prefix,
            "refresh_interval": "1s",
        },
        "rules": {
            "threshold_high_c": 35.0,
            "min_duration_s": 10.0,
            "rate_max_c_per_min": 6.0,
            "rate_window_s": 20.0,
            "groups": {
                "freezers": {"sites": [names[0]], "threshold_high_c": -15.0},
                "cold_rooms": {"sites": [names[1]], "threshold_high_c": 8.0},
            },
        },
        "http": {"enabled": False},
    }


def _write_toml(path: Path, data: Mapping[str, Any]) -> None:
    import tomli_w

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(dict(data)), encoding="utf-8")
    path.chmod(0o600)  # holds the gateway's MQTT password


class Service:
    """A pipeline stage run as ``python -m <module> run -c FILE``, logging to a file."""

    def __init__(self, name: str, module: str, config: Path, log_file: Path) -> None:
        self.name = name
        self.module = module
        self.config = config
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "run", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        log.info("event=service_started name=%s pid=%d", self.name, self.proc.pid)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Pid of the current process (None before :meth:`start`)."""
        return None if self.proc is None else self.proc.pid

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> int | None:
        """Send ``sig`` (``kill -9`` by default) and wait for the exit; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout)
        log.info("event=service_signalled name=%s pid=%d sig=%d", self.name, self.proc.pid, sig)
        return self.proc.returncode

    def log_size(self) -> int:
        """Bytes in the log file so far (a mark for :meth:`log_since`)."""
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        """What the service logged after ``offset`` (from :meth:`log_size`)."""
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# The malformed burst -------------------------------------------------------------------


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
    """Publish ``payloads`` as ``device`` (QoS 1); returns how many the broker accepted."""
    import threading

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    accepted: list[bool] = []
    done = threading.Event()
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"demo-junk-{device}-{run_id}", protocol=paho.MQTTv5
    )
    client.username_pw_set(device, mqtt["users"][device])

    def on_publish(_c: Any, _u: Any, _mid: int, rc: Any, _p: Any) -> None:
        accepted.append(not rc.is_failure)
        if len(accepted) >= len(payloads):
            done.set()

    client.on_publish = on_publish
    client.connect(str(mqtt["host"]), int(mqtt["port"]))
    client.loop_start()
    try:
        for p in payloads:
            client.publish(topic, p, qos=1)
        done.wait(30)
    finally:
        client.disconnect()
        client.loop_stop()
    return sum(accepted)


# The run ------------------------------------------------------------------------------


def merge_config(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied table by table (a nested dict merge).

    >>> merge_config({"kafka": {"a": 1, "b": 2}, "x": 1}, {"kafka": {"b": 3}, "y": {"z": 0}})
    {'kafka': {'a': 1, 'b': 3}, 'x': 1, 'y': {'z': 0}}
    """
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = value
    return out


def pipeline_services(
    run: DemoRun,
    endpoints: Mapping[str, Any],
    *,
    gateway_overrides: Mapping[str, Any] | None = None,
    processor_overrides: Mapping[str, Any] | None = None,
) -> tuple[Service, Service]:
    """Write the run's gateway and processor configs; their (not yet started) services.

    The overrides are merged into :func:`gateway_config` / :func:`processor_config`
    (the chaos tests shorten the processor's Kafka session timeout this way).
    """
    gw_file, pr_file = run.run_dir / "gateway.toml", run.run_dir / "processor.toml"
    _write_toml(gw_file, merge_config(gateway_config(run, endpoints), gateway_overrides or {}))
    _write_toml(pr_file, merge_config(processor_config(run, endpoints), processor_overrides or {}))
    gateway = Service("gateway", "gateway", gw_file, run.run_dir / "logs" / "gateway.log")
    processor = Service(
        "processor", "cloud_processor", pr_file, run.run_dir / "logs" / "processor.log"
    )
    return gateway, processor


async def wait_topics(
    bootstrap: str, topics: Sequence[str], service: Service, wait_s: float
) -> None:
    """Wait until ``topics`` exist (the gateway creates them at start); fail if it died."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + wait_s
        while True:
            existing = set(await admin.list_topics())
            if set(topics) <= existing:
                return
            if not service.alive:
                raise RuntimeError(f"{service.name} exited:\n{service.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service.name} did not create its Kafka topics in {wait_s}s")
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


def _render(run: DemoRun, state: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table

    head = Table.grid(padding=(0, 2))
    head.add_row(
        f"[bold]thermowatch demo[/bold] {run.run_id}",
        f"t = {state['elapsed']:.0f}/{run.duration_s:.0f} s",
        f"stored {state['stored']:,} readings",
        f"[bold]{state['rate']:.1f}[/bold] readings/s",
        f"consumer lag [bold]{state['lag']}[/bold]",
    )
    events = Table(title="script", show_header=False, box=None)
    for line in state["events"][-6:]:
        events.add_row(line)
    alerts = Table(title="open alerts", expand=True)
    for col in ("device", "rule", "severity", "opened", "message"):
        alerts.add_column(col, overflow="ellipsis", no_wrap=True)
    for a in state["alerts"]:
        opened = time.strftime("%H:%M:%S", time.localtime(a.opened_at / 1000))
        color = {"critical": "red", "warning": "yellow"}.get(a.severity, "cyan")
        alerts.add_row(a.device_id, a.rule, f"[{color}]{a.severity}[/{color}]", opened, a.message)
    return Group(head, events, alerts)


async def run_pipeline_demo(
    run: DemoRun,
    endpoints: Mapping[str, Any],
    *,
    live: bool = True,
    console: Any = None,
    drain_timeout_s: float = 120.0,
    malformed_count: int = 24,
) -> dict[str, Any]:
    """Run the whole pipeline on the simulated fleet and return the summary (see module doc)."""
    from contextlib import nullcontext

    from rich.console import Console
    from rich.live import Live

    from telemetry_contract import TopicKind, kafka_topics, mqtt_topic
    from thermowatch.demo_fleet import DemoFleet, plan
    from thermowatch.demo_monitor import KafkaLag, SearchWatch, rate

    console = console or Console()
    run.run_dir.mkdir(parents=True, exist_ok=True)
    topics = kafka_topics(run.kafka_prefix)
    bootstrap = endpoints["kafka"]["bootstrap"]
    url = endpoints["search"]["url"]
    gateway, processor = pipeline_services(run, endpoints)
    fleet_plan = plan(run.sites, run.duration_s)
    fleet = DemoFleet(
        fleet_plan,
        run_dir=run.run_dir,
        w1_dir=run.w1_dir,
        mqtt=endpoints["mosquitto"],
        run_id=run.run_id,
    )
    watch = SearchWatch(
        url, f"{run.index_prefix}readings-*", f"{run.index_prefix}alerts", run.devices
    )
    lag = KafkaLag(bootstrap, run.group_id, [topics.telemetry, topics.edge_alerts, topics.status])
    state: dict[str, Any] = {
        "elapsed": 0.0,
        "stored": 0,
        "rate": 0.0,
        "lag": 0,
        "alerts": [],
        "events": [],
    }
    samples: list[tuple[float, int]] = []

    def event(text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        state["events"].append(f"{stamp} {text}")
        log.info("event=demo_step detail=%r", text)
        if not live:
            console.print(f"{stamp} {text}")

    async def refresh() -> None:
        try:
            stored = await asyncio.to_thread(watch.readings)
            samples.append((time.monotonic(), stored))
            state["stored"], state["rate"] = stored, rate(samples)
            # The fleet's own clean shutdown sends "offline" for every device: not news.
            until = run.fleet_stopped_ms or None
            state["alerts"] = await asyncio.to_thread(watch.open_alerts, run.started_ms, until)
            state["lag"] = await lag.lag()
        except Exception as exc:  # a view glitch must not end the demo
            log.warning("event=view_refresh_failed error=%r", exc)

    fleet_started = False
    try:
        event(f"run dir {run.run_dir}")
        gateway.start()
        await wait_topics(bootstrap, topics.all(), gateway, 90.0)
        event(f"gateway up, Kafka topics {run.kafka_prefix}.*")
        processor.start()
        event(f"processor up, indices {run.index_prefix}*")
        await lag.start()
        run.started_ms = time.time_ns() // 1_000_000
        await asyncio.to_thread(fleet.start)
        fleet_started = True
        t0 = time.monotonic()
        event(f"fleet of {len(run.devices)} agents started ({len(run.sites)} sites, 1 Hz)")
        for p in fleet_plan.incidents:
            run.incidents.append(
                {
                    "kind": p.kind,
                    "device_id": p.device_id,
                    "start_ms": run.started_ms + int(p.start_s * 1000),
                    "end_ms": run.started_ms + int(p.label_end_s * 1000),
                }
            )
        run.malformed_topic = mqtt_topic(
            fleet_plan.site_of(fleet_plan.malformed_device),
            fleet_plan.malformed_device,
            TopicKind.TELEMETRY,
        )
        run.save()
        script: list[tuple[float, str]] = sorted(
            [(p.start_s, f"inject {p.kind} on {p.device_id}") for p in fleet_plan.incidents]
            + [
                (fleet_plan.offline_at_s, "offline"),
                (fleet_plan.online_at_s, "online"),
                (fleet_plan.malformed_at_s, "malformed"),
            ]
        )
        offline_since = 0
        view = (
            Live(_render(run, state), console=console, refresh_per_second=2, transient=False)
            if live
            else nullcontext()
        )
        with view as lv:
            while True:
                elapsed = time.monotonic() - t0
                state["elapsed"] = elapsed
                while script and script[0][0] <= elapsed:
                    _, what = script.pop(0)
                    if what == "offline":
                        offline_since = time.time_ns() // 1_000_000
                        await asyncio.to_thread(fleet.kill_subprocess_agent)
                        event(f"kill -9 the agent of {fleet_plan.offline_device} (last will)")
                    elif what == "online":
                        await asyncio.to_thread(fleet.restart_offline_if_needed)
                        run.incidents.append(
                            {
                                "kind": "offline",
                                "device_id": fleet_plan.offline_device,
                                "start_ms": offline_since,
                                "end_ms": time.time_ns() // 1_000_000,
                            }
                        )
                        event(f"agent of {fleet_plan.offline_device} started again (replays)")
                    elif what == "malformed":
                        dev = fleet_plan.malformed_device
                        others = [d for d in run.devices if d != dev]
                        payloads = malformed_payloads(
                            dev, others[0], fleet_plan.site_of(dev), malformed_count
                        )
                        run.malformed_sent = await asyncio.to_thread(
                            publish_malformed,
                            endpoints["mosquitto"],
                            dev,
                            run.malformed_topic,
                            payloads,
                            run.run_id,
                        )
                        event(f"{run.malformed_sent} malformed payloads published as {dev}")
                    else:
                        event(what)
                for svc in (gateway, processor):
                    if not svc.alive:
                        raise RuntimeError(f"{svc.name} exited:\n{svc.tail()}")
                await refresh()
                if lv is not None:
                    lv.update(_render(run, state))
                if elapsed >= run.duration_s:
                    break
                await asyncio.sleep(max(0.0, min(1.0, run.duration_s - elapsed)))
            if not any(i["kind"] == "offline" for i in run.incidents) and offline_since:
                run.incidents.append(
                    {
                        "kind": "offline",
                        "device_id": fleet_plan.offline_device,
                        "start_ms": offline_since,
                        "end_ms": time.time_ns() // 1_000_000,
                    }
                )
            # Stop the fleet (agents flush their outboxes; the killed one replays first).
            run.fleet_stopped_ms = time.time_ns() // 1_000_000
            await asyncio.to_thread(fleet.restart_offline_if_needed)
            event("stopping the fleet (each agent flushes its outbox)")
            await asyncio.to_thread(fleet.stop)
            fleet_started = False
            run.save()
            from thermowatch.accounting import allocated_from_outboxes

            allocated = allocated_from_outboxes(fleet.outbox_paths())
            expected = sum(len(r) for r in allocated.values())
            event(f"fleet stopped: {expected} seqs allocated; draining the pipeline")
            deadline = time.monotonic() + drain_timeout_s
            while time.monotonic() < deadline:
                await refresh()
                stored = await asyncio.to_thread(watch.readings, refresh=True)
                state["stored"] = stored
                if lv is not None:
                    lv.update(_render(run, state))
                if stored >= expected and state["lag"] == 0:
                    break
                await asyncio.sleep(1.0)
            event(f"drained: {state['stored']} stored, lag {state['lag']}")
    finally:
        if fleet_started:
            await asyncio.to_thread(fleet.stop)
        await lag.close()
        for svc in (processor, gateway):
            await asyncio.to_thread(svc.stop)
        watch.close()
        _cleanup_w1(run)
    summary = await account_run(run, endpoints, fleet.outbox_paths())
    summary["services"] = {
        "gateway_exit": gateway.proc.returncode if gateway.proc else None,
        "processor_exit": processor.proc.returncode if processor.proc else None,
    }
    return summary


def _cleanup_w1(run: DemoRun) -> None:
    import shutil

    shutil.rmtree(run.w1_dir.parent, ignore_errors=True)


async def account_run(
    run: DemoRun, endpoints: Mapping[str, Any], outboxes: Mapping[str, Path] | None = None
) -> dict[str, Any]:
    """The summary of a finished run, counted from the search server, Kafka and the outboxes."""
    from telemetry_contract import ContractError, DeadLetter, decode, kafka_topics
    from thermowatch import accounting as acc
    from thermowatch.demo_monitor import SearchWatch

    url = endpoints["search"]["url"]
    bootstrap = endpoints["kafka"]["bootstrap"]
    topics = kafka_topics(run.kafka_prefix)
    if outboxes is None:
        outboxes = {d: run.run_dir / "edge" / d / "outbox.sqlite3" for d in run.devices}
    allocated = acc.allocated_from_outboxes(outboxes)
    stored = await asyncio.to_thread(
        acc.fetch_stored, url, f"{run.index_prefix}readings-*", run.devices
    )
    stored = {k: v for k, v in stored.items() if k[1] < MALFORMED_SEQ}
    gaps = await acc.fetch_gaps(bootstrap, topics.telemetry, run.devices)
    readings = acc.account(allocated, stored, gaps)
    alerts = await asyncio.to_thread(
        acc.fetch_alerts, url, f"{run.index_prefix}alerts", run.devices
    )
    incidents = [
        acc.Incident(i["kind"], i["device_id"], int(i["start_ms"]), int(i["end_ms"]))
        for i in run.incidents
    ]
    # When each alert was published as opened: the Kafka record time of its first change.
    published: dict[str, int] = {}
    for value, ts in await acc.read_records(bootstrap, topics.alerts):
        try:
            change = json.loads(value)
        except ValueError:
            continue
        if isinstance(change, dict) and change.get("change") == "opened":
            aid = str(change.get("alert_id"))
            published[aid] = min(ts, published.get(aid, ts))
    score = acc.score_alerts(
        incidents,
        alerts,
        since_ms=run.started_ms,
        until_ms=run.fleet_stopped_ms or None,
        published_ms=published,
    )
    dead = 0
    for value in await acc.read_topic(bootstrap, topics.deadletter):
        try:
            msg = decode(value, now_ms=2**62)
        except ContractError:
            continue
        if isinstance(msg, DeadLetter) and msg.source_topic == run.malformed_topic:
            dead += 1
    watch = SearchWatch(
        url, f"{run.index_prefix}readings-*", f"{run.index_prefix}alerts", run.devices
    )
    try:
        malformed_stored = await asyncio.to_thread(watch.count_seq_at_least, MALFORMED_SEQ)
    finally:
        watch.close()
    lat = [x for x in score.latencies_ms if x is not None]
    return {
        "run_id": run.run_id,
        "duration_s": run.duration_s,
        "devices": len(run.devices),
        "kafka_topic_prefix": run.kafka_prefix,
        "index_prefix": run.index_prefix,
        "readings_sent": readings.sent,
        "readings_stored": readings.stored,
        "readings_lost": readings.lost,
        "readings_duplicated": readings.duplicated,
        "readings_covered_by_gap": readings.covered,
        "readings_unexpected": readings.unexpected,
        "gap_conflicts": readings.gap_conflicts,
        "lost_examples": [list(x) for x in readings.lost_examples],
        "duplicated_examples": [list(x) for x in readings.duplicated_examples],
        "incidents_injected": score.injected,
        "incidents_alerted": score.alerted,
        "incidents_missed": score.missed,
        "false_alerts": score.false_alerts,
        "false_alert_ids": list(score.false_alert_ids),
        "alert_latency_ms": acc.percentiles(lat),
        "alert_latency_note": (
            "incident start (scripted time) to the Kafka time its first alert was published"
        ),
        "incidents": [
            {
                "kind": inc.kind,
                "device_id": inc.device_id,
                "alerted": lat_ms is not None,
                "latency_ms": lat_ms,
                "rules": list(rules),
            }
            for inc, lat_ms, rules in zip(incidents, score.latencies_ms, score.rules, strict=True)
        ],
        "malformed_sent": run.malformed_sent,
        "malformed_dead_lettered": dead,
        "malformed_stored": malformed_stored,
        "ok": readings.ok and malformed_stored == 0,
    }


# CLI ----------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` command (and ``demo account``)."""
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on a simulated fleet (the main job)",
        description=__doc__,
    )
    p.add_argument("--duration", type=float, default=150.0, help="seconds of fleet (default 150)")
    p.add_argument("--summary", type=Path, help="also write the summary as JSON to this file")
    p.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the stack (default 600)"
    )
    p.add_argument("--no-live", action="store_true", help="plain log lines instead of a live view")
    p.set_defaults(func=_run)
    dsub = p.add_subparsers(title="demo commands", metavar="DEMO_COMMAND")
    a = dsub.add_parser("account", help="count a finished run again (readings, alerts)")
    a.add_argument("--run-dir", type=Path, required=True, help="<stack dir>/demo/<run id>")
    a.add_argument("--summary", type=Path, help="also write the summary as JSON to this file")
    a.set_defaults(func=_account)
    c = dsub.add_parser(
        "clean", help="remove older demo runs' Kafka topics, indices, templates and files"
    )
    c.add_argument(
        "--keep", type=int, default=0, help="newest runs to keep (default 0: remove all)"
    )
    c.set_defaults(func=_clean)


def _clean(args: argparse.Namespace) -> int:
    from deploy.local.stack import LocalStack
    from thermowatch.demo_clean import clean_demo_runs

    if args.keep < 0:
        print(f"thermowatch: error: --keep: must be 0 or more, got {args.keep}", file=sys.stderr)
        return 2
    stack = LocalStack()
    report = clean_demo_runs(stack.root, stack.endpoints(), keep=args.keep)
    print(
        f"removed {len(report.runs)} run(s): {len(report.topics)} topics, "
        f"{len(report.indices)} indices, {len(report.templates)} templates, "
        f"{len(report.dirs)} directories"
    )
    for err in report.errors:
        print(f"thermowatch: error: {err} (left for the next clean)", file=sys.stderr)
    return 1 if report.errors else 0


def _print_summary(console: Any, summary: Mapping[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=f"demo summary ({summary['run_id']})")
    t.add_column("measure")
    t.add_column("value", justify="right")
    keys = (
        "readings_sent", "readings_stored", "readings_lost", "readings_duplicated",
        "readings_covered_by_gap", "readings_unexpected", "incidents_injected",
        "incidents_alerted", "incidents_missed", "false_alerts", "malformed_sent",
        "malformed_dead_lettered", "malformed_stored",
    )  # fmt: skip
    for k in keys:
        t.add_row(k, str(summary[k]))
    for q, v in summary["alert_latency_ms"].items():
        t.add_row(f"alert_latency_ms {q}", "-" if v is None else f"{v:,}")
    console.print(t)
    inc = Table(title="incidents")
    for col in ("kind", "device", "alerted", "latency ms", "rules"):
        inc.add_column(col)
    for i in summary["incidents"]:
        inc.add_row(
            i["kind"],
            i["device_id"],
            "[green]yes[/green]" if i["alerted"] else "[red]missed[/red]",
            "-" if i["latency_ms"] is None else str(i["latency_ms"]),
            ", ".join(i["rules"]),
        )
    console.print(inc)


def _finish(console: Any, summary: dict[str, Any], path: Path | None) -> int:
    _print_summary(console, summary)
    if path:
        path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if not summary["ok"]:
        print(
            "thermowatch: error: readings lost or stored twice (or malformed stored): see above",
            file=sys.stderr,
        )
        return 1
    return 0


def _account(args: argparse.Namespace) -> int:
    from rich.console import Console

    from deploy.local.stack import LocalStack

    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    run = DemoRun.load(args.run_dir)
    summary = asyncio.run(account_run(run, LocalStack().endpoints()))
    return _finish(Console(), summary, args.summary)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from deploy.local.stack import LocalStack
    from thermowatch.smoke import run_all

    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    # 30 agents log every start and stop: keep the terminal for the live view.
    logging.getLogger("edge_agent").setLevel(logging.WARNING)
    console = Console()
    stack = LocalStack()
    t0 = time.monotonic()
    with console.status("bringing the local stack up (first run downloads Kafka and OpenSearch)"):
        stack.up(timeout=args.timeout)
    up_s = time.monotonic() - t0
    endpoints = stack.endpoints()
    probes = run_all(endpoints)
    table = Table(title=f"thermowatch local stack (up in {up_s:.1f} s)")
    for col in ("service", "address", "check", "result", "time"):
        table.add_column(col)
    address = {
        "mosquitto": f"mqtt://{endpoints['mosquitto']['host']}:{endpoints['mosquitto']['port']}",
        "kafka": endpoints["kafka"]["bootstrap"],
        "search": endpoints["search"]["url"],
    }
    for p in probes:
        table.add_row(
            p.service,
            address[p.service],
            p.detail,
            "[green]ok[/green]" if p.ok else "[red]FAILED[/red]",
            f"{p.seconds:.2f} s",
        )
    console.print(table)
    if not all(p.ok for p in probes):
        print("thermowatch: error: a service failed its check (see above)", file=sys.stderr)
        return 1
    from thermowatch.demo_clean import clean_demo_runs

    # Earlier runs' topics, indices and files: keep the newest one to compare with.
    cleaned = clean_demo_runs(stack.root, endpoints, keep=1)
    if cleaned.runs:
        console.print(
            f"Removed {len(cleaned.runs)} older demo run(s): {len(cleaned.topics)} topics, "
            f"{len(cleaned.indices)} indices"
            + (f" ({'; '.join(cleaned.errors)})" if cleaned.errors else "")
        )
    run = new_run(stack.root, demo_sites(), args.duration)
    summary = asyncio.run(
        run_pipeline_demo(
            run, endpoints, live=not args.no_live and console.is_terminal, console=console
        )
    )
    summary["stack_up_seconds"] = round(up_s, 2)
    summary["smoke"] = {p.service: {"ok": p.ok, "seconds": round(p.seconds, 3)} for p in probes}
    code = _finish(console, summary, args.summary)
    console.print(
        f"Logs and configs: {run.run_dir}\n"
        "The stack is left running. Dashboards: "
        "[bold]thermowatch kibana import --url http://localhost:5601 "
        f"--prefix {run.index_prefix}[/bold]\n"
        f"Count again: [bold]thermowatch demo account --run-dir {run.run_dir}[/bold]\n"
        f"Web view: [bold]THERMOWATCH_WEB__KAFKA__TOPIC_PREFIX={run.kafka_prefix} "
        f"THERMOWATCH_WEB__SEARCH__INDEX_PREFIX={run.index_prefix} thermowatch web run[/bold]\n"
        "Stop everything: [bold]make demo-down[/bold] (thermowatch stack down)."
    )
    return code

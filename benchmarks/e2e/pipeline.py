"""The system under test of one run: its broker, gateway(s), processor(s) and load workers.

Everything is named for the run (Kafka topic prefix ``e2e.<run id>``, consumer
group, index prefix ``e2e-<run id>-``, MQTT share group), so it shares the
stack's Kafka and search server with other work without mixing data. The
gateway and processor are the real commands (``python -m gateway run``,
``python -m cloud_processor run``), configured by ``thermowatch.demo``'s
builders plus the benchmark's settings (:meth:`Pipeline.processor_toml`).
With ``--processors N`` the N processors are one consumer group, each with
its own client id and HTTP port; the run's topics get ``--partitions``
partitions (default: the gateway config's) and the stack's replication
factor (3 on the cluster profile).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing as mp
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.e2e import fleet, loadgen
from deploy.local.stack import LocalStack, free_port
from stagekit.kafka import create_topics, partitions_of
from stagekit.search import SearchSettings
from telemetry_contract import kafka_topics
from thermowatch.demo import DemoRun, Service, gateway_config, processor_config

__all__ = ["Pipeline", "ensure_users", "raise_fd_limit", "write_toml"]


def write_toml(path: Path, data: Mapping[str, Any]) -> None:
    """A service's config file, readable only by its owner."""
    import tomli_w

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(dict(data)), encoding="utf-8")
    path.chmod(0o600)  # holds the gateway's MQTT password


def ensure_users(
    stack: LocalStack, devices: list[str], *, certificates: bool = True
) -> dict[str, str]:
    """Every MQTT user with its password, the new ones of ``devices`` added to the
    broker in one batch (one render, one reload; ``certificates``: with client
    certificates, else password login only)."""
    known = stack.credentials()
    missing = [d for d in devices if d not in known]
    return known | (stack.add_mqtt_users(missing, certificates=certificates) if missing else {})


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit (inherited by the private brokers and
    the load workers) to at least ``wanted``; the new soft limit. Past the hard
    limit only a process with CAP_SYS_RESOURCE may go (root in a container may
    lack it): else a clear error that names ``--brokers``."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError) as exc:
        raise RuntimeError(
            f"--devices: {wanted} open files needed per broker, limit {soft}/{hard} "
            f"(ulimit -n): {exc}; shard the fleet over more --brokers"
        ) from exc
    return wanted


class Pipeline:
    """Start, drive and stop one run's services and load workers."""

    def __init__(self, args: argparse.Namespace, webhook_url: str) -> None:
        self.args = args
        self.webhook_url = webhook_url
        self.stack = LocalStack()
        self.endpoints = self.stack.endpoints()
        rid = time.strftime("%Y%m%d%H%M%S", time.gmtime()) + uuid.uuid4().hex[:4]
        self.rid = rid
        #: The run's private brokers (``--brokers``; none with ``--mqtt shared``).
        self.mqtt_stacks: list[LocalStack] = []
        if args.mqtt == "private":
            # Every gateway on the shared broker reads thermowatch/# (the ACL
            # allows no other root), so other engineers' traffic would flow
            # through ours and ours through theirs: a private Mosquitto avoids both.
            ports: list[int] = []
            while len(ports) < args.brokers:
                port = free_port(span=2)
                if all(abs(port - p) > 2 for p in ports):
                    ports.append(port)
            self.mqtt_stacks = [
                LocalStack(self.stack.root / "bench-e2e" / rid / f"mqtt{b or ''}", mqtt_port=port)
                for b, port in enumerate(ports)
            ]
        elif args.brokers > 1:
            raise ValueError("--brokers: more than one needs --mqtt private")
        n_sites = max(1, math.ceil(args.devices / 10))
        self.sites = {
            f"e2e{s}": [f"e2e-d{d:02d}" for d in range(10 * s - 9, min(10 * s, args.devices) + 1)]
            for s in range(1, n_sites + 1)
        }
        #: The sites of each broker: the fleet sharded by site, one gateway group each.
        self.shards = fleet.shard(list(self.sites), args.brokers)
        #: Each broker's endpoint, with its users (set by :meth:`start_broker`).
        self.broker_endpoints: list[dict[str, Any]] = []
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
        self.ctx = mp.get_context("spawn")
        #: ``(document id, ts)`` samples the workers stream for the searchability probe.
        self.samples: Any = self.ctx.Queue()
        self.workers: list[tuple[Any, Any]] = []
        self.worker_devices: list[int] = []  # devices per worker
        self.gateways: list[Service] = []
        #: The processors (``--processors``), one consumer group.
        self.processors: list[Service] = []
        #: Services killed on purpose (``--kill-processor-at-s``): not a failure.
        self.killed: set[str] = set()
        #: Each processor's HTTP port (its ``/metrics``), in the order of :attr:`processors`.
        self.processor_http: list[int] = []
        #: Seconds the slowest worker took to connect its devices.
        self.connect_s = 0.0

    @property
    def devices(self) -> list[str]:
        return [d for devs in self.sites.values() for d in devs]

    #: The hostile device of ``--storm`` (its own site: it publishes no readings).
    storm_device: tuple[str, str] = ("e2e-storm", "e2estorm")

    # -- configs ---------------------------------------------------------------

    def gateway_toml(self, i: int, broker: int = 0) -> dict[str, Any]:
        endpoints = self.endpoints
        if self.broker_endpoints:
            endpoints = {**endpoints, "mosquitto": self.broker_endpoints[broker]}
        cfg = gateway_config(self.run, endpoints)
        cfg["gateway"]["id"] = f"e2e-{self.rid}-{i}"
        cfg["mqtt"]["share_group"] = f"e2e{self.rid}"
        cfg["kafka"]["linger_ms"] = self.args.gateway_linger_ms
        if self.partitions:
            cfg["kafka"]["partitions"] = self.partitions
        cfg["receipts"] = {"enabled": self.args.gateway_receipts == "on"}
        return cfg

    @property
    def partitions(self) -> int:
        """``--partitions`` (0: the gateway config's)."""
        return int(self.args.partitions or 0)

    def processor_toml(self, k: int = 0) -> dict[str, Any]:
        """Processor ``k``'s config (all of them one consumer group)."""
        cfg = processor_config(self.run, self.endpoints)
        if self.args.processors > 1:
            cfg["kafka"]["client_id"] = f"e2e-processor-{self.rid}-{k}"
        if self.partitions:
            cfg["kafka"]["partitions"] = self.partitions
        cfg["search"]["refresh_interval"] = self.args.refresh_interval
        # admin: the run's own e2e- prefix is outside the processor user's indices
        admin = SearchSettings.from_endpoint(self.endpoints["search"], "admin")
        cfg["search"].update(username=admin.username, password=admin.password)
        # The processor's default (the demo commits every second): each commit
        # first recomputes the one-minute windows touched since the last one.
        cfg["kafka"]["commit_interval_s"] = 5.0
        cfg["rules"] = {
            "threshold_high_c": 50.0,
            "min_duration_s": 0.0,
            # Only the threshold rule: fleet outliers would fire on the same readings.
            "outlier_z": 1e9,
            # Every simulated device keeps its state (the default bounds it at
            # 20,000: a larger fleet would evict, and resolve, alerts in turn).
            "max_devices": max(20_000, self.args.devices + 1_000),
        }
        # Every device gets an anomaly every few seconds: never call that flapping
        # (a flapping alert stays open and would swallow the next anomalies).
        cfg["alerts"] = {"flap_max_opens": 1_000_000_000}
        cfg["webhook"] = {
            "url": self.webhook_url,
            "timeout_s": 5.0,
            # The default (5/s, burst 10) is for people; the benchmark sends
            # ~2 changes per anomaly and must not measure the token bucket.
            "rate_per_s": 1000.0,
            "burst": 1000,
        }
        if not self.args.storm:
            # (b) times every anomaly's ``opened`` change: no coalescing of a
            # device's consecutive anomalies, no per-device limit (keys of this
            # branch: a run against older code uses --storm, which keeps the
            # processor's defaults, the limits under test).
            # Every alert change, not incidents (one per device while it is open).
            cfg["webhook"] |= {
                "coalesce_s": 0.0,
                "device_rate_per_s": 1000.0,
                "device_burst": 1000,
                "notify": "alerts",
            }
        # Optional webhook settings of the run (e.g. the storm's), as given.
        for key, value in self.args.processor_webhook or []:
            cfg["webhook"][key] = value
        port = free_port()
        while port in self.processor_http:
            port = free_port()
        self.processor_http.append(port)
        cfg["http"] = {"enabled": True, "host": "127.0.0.1", "port": port}
        for key, value in self.args.processor_kafka or []:
            cfg["kafka"][key] = value
        for key, value in self.args.processor_aggregates or []:
            cfg.setdefault("aggregates", {})[key] = value
        return cfg

    # -- lifecycle -------------------------------------------------------------

    def start_broker(self) -> dict[str, str]:
        """The private brokers (unless ``--mqtt shared``), each with the MQTT users
        of its devices; the devices' passwords."""
        passwords: dict[str, str] = {}
        self.broker_endpoints = []
        for b, stack in enumerate(self.mqtt_stacks or [self.stack]):
            if self.mqtt_stacks:
                stack.up(["mosquitto"])
            wanted = [d for site in self.shards[b] for d in self.sites[site]]
            if self.args.storm and b == 0:
                wanted.append(self.storm_device[0])
            users = ensure_users(
                stack, wanted, certificates=self.args.device_login == "certificate"
            )
            endpoint = stack.endpoints()["mosquitto"]
            endpoint["users"] = users
            self.broker_endpoints.append(endpoint)
            passwords |= {d: users[d] for d in wanted}
        self.endpoints = {**self.endpoints, "mosquitto": self.broker_endpoints[0]}
        return passwords

    def start_services(self) -> None:
        """The run's topics (broker append time, the stack's replication factor), the
        processor(s), then the gateway(s)."""
        rd = self.run.run_dir
        rd.mkdir(parents=True, exist_ok=True)
        gw_cfg = self.gateway_toml(0)
        kafka = self.endpoints["kafka"]
        asyncio.run(
            create_topics(
                kafka,
                kafka_topics(self.run.kafka_prefix).all(),
                partitions=int(gw_cfg["kafka"]["partitions"]),
                replication=int(kafka.get("replication_factor", 1)),
                configs={"message.timestamp.type": "LogAppendTime"},
            )
        )
        n = self.args.processors
        for k in range(n):
            name = "processor" if n == 1 else f"processor{k}"  # one: as before
            pr = rd / f"{name}.toml"
            write_toml(pr, self.processor_toml(k))
            svc = Service(name, "cloud_processor", pr, rd / "logs" / f"{name}.log")
            svc.start()
            self.processors.append(svc)
        for b in range(len(self.broker_endpoints) or 1):  # a gateway group per broker
            for j in range(self.args.gateways):
                i = b * self.args.gateways + j
                gw = rd / f"gateway{i}.toml"
                write_toml(gw, self.gateway_toml(i, b))
                svc = Service(f"gateway{i}", "gateway", gw, rd / "logs" / f"gateway{i}.log")
                svc.start()
                self.gateways.append(svc)
        topics = kafka_topics(self.run.kafka_prefix)
        wanted = [topics.telemetry, topics.alerts]
        deadline = time.monotonic() + 120
        while not set(wanted) <= set(asyncio.run(partitions_of(kafka, wanted))):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("gateway/processor did not create their topics in 120 s")
            time.sleep(1.0)

    def check_alive(self) -> None:
        """Raise, with the end of its log, if a gateway or a processor has exited."""
        for svc in [*self.gateways, *self.processors]:
            if not svc.alive and svc.name not in self.killed:
                raise RuntimeError(f"{svc.name} exited:\n{svc.tail()}")

    def start_workers(self, passwords: dict[str, str]) -> None:
        """The load workers (``loadgen.worker_main``), each connected for its devices
        (``--workers`` per broker, at least one each; a worker's devices share a broker)."""
        a = self.args
        cert = a.device_login == "certificate"
        plan: list[tuple[list[tuple[str, str]], dict[str, Any]]] = []
        for b, m in enumerate(self.broker_endpoints):
            devices = [(d, site) for site in self.shards[b] for d in self.sites[site]]
            per_broker = max(1, a.workers // len(self.broker_endpoints))
            plan += [(devices[j::per_broker], m) for j in range(per_broker)]
        first = 0  # the fleet-wide index of the worker's first device
        for i, (mine, m) in enumerate(plan):
            port = int(m["port"] if cert else m["password_port"])
            login = loadgen.Login(
                tls=(m["ca_file"], m["certs_dir"] if cert else None),
                sources=(
                    fleet.sources(first, len(mine), a.per_address) if a.per_address > 0 else None
                ),
                connect_rate=a.connect_rate / len(plan),
                keepalive=a.keepalive_s,
            )
            first += len(mine)
            parent, child = self.ctx.Pipe()
            p = self.ctx.Process(
                target=loadgen.worker_main,
                args=(
                    i,
                    mine,
                    {d: passwords[d] for d, _ in mine},
                    m["host"],
                    port,
                    self.rid,
                    child,
                    self.samples,
                    login,
                ),
                daemon=True,
            )
            p.start()
            self.workers.append((p, parent))
            self.worker_devices.append(len(mine))
        per_worker = max(len(mine) for mine, _m in plan)
        # Three times the paced time, plus two minutes: a loaded machine's
        # handshakes fall behind the pace.
        wait = 120 + (3 * per_worker / (a.connect_rate / len(plan)) if a.connect_rate > 0 else 0)
        t0 = time.monotonic()
        for p, conn in self.workers:
            while not conn.poll(1.0):
                if not p.is_alive():
                    raise RuntimeError(f"load worker {p.pid} exited while connecting")
                if time.monotonic() - t0 > wait:
                    raise RuntimeError(f"load worker {p.pid} did not connect in {wait:.0f} s")
            msg = conn.recv()
            if "error" in msg:
                raise RuntimeError(f"load worker: {msg['error']}")
            self.connect_s = max(self.connect_s, float(msg.get("connect_s", 0.0)))

    def pids(self) -> dict[str, int | None]:
        """Process ids of the services and the stack's servers, by name (for CPU use)."""
        return {
            **{p.name: p.pid for p in self.processors},
            **{g.name: g.proc.pid if g.proc else None for g in self.gateways},
            **self.stack_pids(),
            **{
                f"mosquitto{b or ''}": st.status(["mosquitto"])["mosquitto"].get("pid")
                for b, st in enumerate(self.mqtt_stacks)
            },
        }

    def stack_pids(self) -> dict[str, int | None]:
        """The stack's servers by name; on the cluster profile every node (``kafka-2``)."""
        out: dict[str, int | None] = {}
        for name, st in self.stack.status().items():
            nodes = st.get("nodes") or []
            if nodes:
                out |= {f"{name}-{n['id']}": n.get("pid") for n in nodes}
            else:
                out[name] = st.get("pid")
        return out

    def worker_pids(self) -> list[int | None]:
        return [p.pid for p, _ in self.workers]

    def run_load(
        self, rate: float, seconds: float, start_at: float | None = None
    ) -> list[dict[str, Any]]:
        """Offer ``rate`` readings/s for ``seconds``; each worker's report of what it did."""
        a = self.args
        w = len(self.workers)
        start_at = start_at or time.time() + 0.5
        total = sum(self.worker_devices)
        for (_proc, conn), n in zip(self.workers, self.worker_devices, strict=True):
            conn.send(
                {
                    "rate": rate * n / total,  # the same period for every device
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
        return results

    def start_storm(self, passwords: dict[str, str], start_at: float) -> tuple[Any, Any]:
        """The storm device's process (``loadgen.storm_main``) and its pipe."""
        m = self.endpoints["mosquitto"]
        cert = self.args.device_login == "certificate"
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(
            target=loadgen.storm_main,
            args=(
                m["host"],
                int(m["port"] if cert else m["password_port"]),
                self.storm_device,
                passwords[self.storm_device[0]],
                self.rid,
                self.args.storm_alerts,
                self.args.storm_rate,
                start_at,
                child,
                (m["ca_file"], m["certs_dir"] if cert else None),
            ),
            daemon=True,
        )
        p.start()
        return p, parent

    def stop_workers(self) -> None:
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
        self.worker_devices.clear()

    def stop_services(self) -> None:
        for svc in [*self.processors, *self.gateways]:
            svc.stop()

    def stop_broker(self) -> None:
        """Stop the private broker and remove its state (its queue, if the pipeline fell behind)."""
        for stack in self.mqtt_stacks:
            stack.down(["mosquitto"])
            shutil.rmtree(stack.root, ignore_errors=True)

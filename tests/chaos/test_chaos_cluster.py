"""Chaos on the cluster profile: brokers, search nodes and processors killed under load.

A private stack in the cluster profile (``LocalStack(cluster=True)``, what ``thermowatch
stack up --cluster`` runs): Mosquitto, 3 Kafka KRaft nodes (topics with 3 replicas,
``min.insync.replicas=2``) and a 3-node OpenSearch cluster (1 replica per shard).
On it, 2 gateways on one shared subscription and 2 processors in one consumer group,
configured from the stack's endpoints as the demo configures them (every bootstrap
server, every search URL), and a fleet of in-process edge agents (3 sites x 2 devices,
2 Hz). The cases, in order (they share the rig: run the module as a whole):

(k) ``kill -9`` Kafka node 1 -- the first bootstrap server -- for 10 s, then start it
    again; the fleet keeps publishing and the pipeline keeps flowing meanwhile;
(s) ``kill -9`` search node 1 -- the first search URL -- for 20 s, then start it again;
(r) a third processor joins the group under load, and one of the first two is killed
    with SIGKILL in the middle of the rebalance that join causes: after the group
    revoked its partitions and before the newcomer was given any;
(z) the killed processor starts again (3 in the group), the fleet stops, and everything
    is accounted for.

After each case, exact accounting as in ``test_chaos_pipeline.py``: every seq the
outboxes allocated so far is stored exactly once, and the case's incident (a probe held
above its site's threshold while the fault happens) has exactly one ``threshold_high``
alert, opened and resolved once on the alerts topic. The faults are proven: a killed
process's exit status is -9, a node meant to be down refused every connection tried
twice a second, the cluster served meanwhile (the other nodes answered), and the node
came back under a new pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from deploy.local.stack import STACK_DIR_ENV, LocalStack, free_port
from stagekit.search import SearchError, SearchSettings
from telemetry_contract import kafka_topics
from testsupport.chaos import PortWatch, chaos_fleet, chaos_run, kill9
from testsupport.search import admin_settings
from thermowatch import accounting as acc
from thermowatch.demo import DemoFleet, KafkaLag, Service, wait_topics
from thermowatch.demo.configs import gateway_config, merge_config, processor_config, write_toml

pytestmark = [pytest.mark.chaos, pytest.mark.cluster, pytest.mark.timeout(600)]

T = TypeVar("T")

SITES = {"s1": ["s1-d01", "s1-d02"], "s2": ["s2-d01", "s2-d02"], "s3": ["s3-d01", "s3-d02"]}
INTERVAL_S = 0.5
#: Above each site's threshold_high in the demo's processor config (min_duration_s 10 s).
HOT_C = {"s1": 0.0, "s2": 30.0, "s3": 60.0}
HOLD_S = 25.0
MIN_NEW_READINGS = 100
SETTLE_S = 180.0
#: A killed processor leaves the group this soon (the default is 30 s); a frozen one
#: must be let go before it.
SESSION_TIMEOUT_MS = 15_000

_T0 = time.monotonic()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def say(what: str) -> None:
    print(f"cluster t={time.monotonic() - _T0:6.1f}s {what}", flush=True)


def wait_for(what: str, check: Callable[[], T], timeout: float, every: float = 1.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def transient(read: Callable[[], T], within_s: float = 60.0) -> T:
    """``read()``, tried again while the search cluster's answer is retriable (503,
    429, no connection): on a cluster an index just created, or a shard whose node
    was just killed, is unassigned for a moment ("all shards failed") before a
    replica takes over."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return read()
        except SearchError as exc:
            if not exc.retriable or time.monotonic() > deadline:
                raise
            say(f"search cluster busy ({exc.status or exc}): reading again")
            time.sleep(1.0)


@dataclass
class Incident:
    phase: str
    device: str
    start_ms: int
    end_ms: int = 0


class ClusterRig:
    """The cluster stack, 2 gateways, 2-3 processors, the fleet, and what was checked."""

    def __init__(self, root: Path, work: Path) -> None:
        self.stack = LocalStack(
            stack_dir=root,
            cluster=True,
            mqtt_port=free_port(span=2),
            # 3 nodes, 10 ports apart, each with its controller (Kafka) or transport
            # (search, + 100) port.
            kafka_port=free_port(span=21),
            search_port=free_port(span=120),
        )
        self.run = chaos_run(work, "cluster", SITES)
        self.topics = kafka_topics(self.run.kafka_prefix)
        self.devices = self.run.devices
        self.incidents: list[Incident] = []
        self.last_sent = 0
        self.fleet: DemoFleet | None = None
        self.fleet_stopped = False
        self.gateways: list[Service] = []
        self.processors: list[Service] = []
        #: Alert changes a killed processor may publish again (same id and version).
        self.tolerated_repeats: set[tuple[str, str, int]] = set()
        #: Processors killed on purpose (not expected alive until started again).
        self.killed: set[str] = set()

    @property
    def endpoints(self) -> dict[str, dict[str, Any]]:
        return self.stack.endpoints()

    @property
    def search(self) -> SearchSettings:
        return admin_settings(self.endpoints["search"])

    @property
    def kafka(self) -> dict[str, Any]:
        return dict(self.endpoints["kafka"])

    # -- lifecycle --------------------------------------------------------------------

    def _service(self, kind: str, n: int, config: dict[str, Any]) -> Service:
        path = self.run.run_dir / f"{kind}-{n}.toml"
        write_toml(path, config)
        module = "gateway" if kind == "gateway" else "cloud_processor"
        return Service(f"{kind}-{n}", module, path, self.run.run_dir / "logs" / f"{kind}-{n}.log")

    def new_processor(self) -> Service:
        n = len(self.processors) + 1
        config = merge_config(
            processor_config(self.run, self.endpoints),
            {
                "kafka": {
                    "client_id": f"cluster-processor-{n}",
                    "session_timeout_ms": SESSION_TIMEOUT_MS,
                }
            },
        )
        svc = self._service("processor", n, config)
        self.processors.append(svc)
        return svc

    def up(self) -> None:
        say(f"cluster stack up in {self.stack.root}")
        self.stack.up(timeout=300.0)
        status = self.stack.status()
        assert [n["id"] for n in status["kafka"]["nodes"]] == [1, 2, 3]
        assert [n["id"] for n in status["search"]["nodes"]] == [1, 2, 3]
        say("cluster healthy; starting 2 gateways (shared subscription) and 2 processors")
        for n in (1, 2):
            config = merge_config(
                gateway_config(self.run, self.endpoints),
                {
                    "gateway": {"id": f"cluster-{self.run.run_id}-{n}"},
                    "mqtt": {"share_group": "gateways"},
                },
            )
            self.gateways.append(self._service("gateway", n, config))
        for gw in self.gateways:
            gw.start()
        asyncio.run(wait_topics(self.kafka, self.topics.all(), self.gateways[0], 120.0))
        for _ in (1, 2):
            self.new_processor().start()
        self.fleet = chaos_fleet(
            self.run, self.endpoints["mosquitto"], INTERVAL_S, {"reconnect_max_s": 4.0}
        )
        self.run.started_ms = now_ms()
        self.fleet.start()

        def every_device_stored() -> bool:
            stored = self.stored(self.devices)
            return all(sum(1 for d, _ in stored if d == dev) >= 5 for dev in self.devices)

        wait_for("the first readings of every device to be stored", every_device_stored, 180.0)
        say("pipeline flowing")

    def down(self) -> None:
        errors: list[str] = []
        if self.fleet is not None and not self.fleet_stopped:
            self.fleet.stop()
            self.fleet_stopped = True
        for svc in (*self.processors, *self.gateways):
            with contextlib.suppress(Exception):
                svc.stop()
        try:
            self.stack.down()
        except Exception as exc:
            errors.append(repr(exc))
        leftover = {
            f"{name}-{node['id']}": node["pid"]
            for name, entry in self.stack.status().items()
            for node in entry.get("nodes") or [{"id": 1, "pid": entry["pid"]}]
            if node["pid"] is not None
        }
        if leftover:
            errors.append(f"nodes still running after down(): {leftover}")
        shutil.rmtree(self.run.w1_dir, ignore_errors=True)
        assert not errors, errors

    def alive(self) -> None:
        for svc in (*self.gateways, *self.processors):
            if svc.proc is not None and svc.name not in self.killed:
                assert svc.alive, f"{svc.name} exited:\n{svc.tail(40)}"

    # -- what is where ------------------------------------------------------------------

    def allocated(self, devices: list[str] | None = None) -> dict[str, range]:
        assert self.fleet is not None
        paths = self.fleet.outbox_paths()
        return acc.allocated_from_outboxes({d: paths[d] for d in devices or self.devices})

    def stored(self, devices: list[str]) -> dict[tuple[str, int], int]:
        pattern = f"{self.run.index_prefix}readings-*"
        return transient(lambda: acc.fetch_stored(self.search, pattern, devices))

    def alerts(self, devices: list[str] | None = None) -> list[acc.AlertDoc]:
        index = f"{self.run.index_prefix}alerts"
        return transient(lambda: acc.fetch_alerts(self.search, index, devices or self.devices))

    def changes(self) -> list[acc.PublishedChange]:
        return asyncio.run(acc.fetch_alert_changes(self.kafka, self.topics.alerts))

    def lag(self) -> int:
        async def measure() -> int:
            watch = KafkaLag(
                self.kafka,
                self.run.group_id,
                [self.topics.telemetry, self.topics.edge_alerts, self.topics.status],
            )
            await watch.start()
            try:
                return await watch.lag()
            finally:
                await watch.close()

        return asyncio.run(measure())

    # -- incidents and checks -----------------------------------------------------------

    def begin_incident(self, phase: str, device: str) -> Incident:
        assert self.fleet is not None
        inc = Incident(phase, device, now_ms())
        self.fleet.force(device, HOT_C[device.split("-")[0]])
        self.incidents.append(inc)
        return inc

    def end_incident(self, inc: Incident) -> None:
        assert self.fleet is not None
        wait = inc.start_ms / 1000 + HOLD_S - time.time()
        if wait > 0:
            time.sleep(wait)
        self.fleet.force(inc.device, None)
        inc.end_ms = now_ms()

    def check_readings(self, phase: str, min_new: int = MIN_NEW_READINGS) -> acc.Accounting:
        """Every seq allocated so far stored exactly once (waits, bounded, to catch up)."""
        snapshot = self.allocated()

        def all_stored() -> bool:
            self.alive()
            stored = self.stored(self.devices)
            return all((d, s) in stored for d, seqs in snapshot.items() for s in seqs)

        deadline = time.monotonic() + SETTLE_S
        while not all_stored() and time.monotonic() < deadline:
            time.sleep(1.0)
        stored = {
            k: n
            for k, n in self.stored(self.devices).items()
            if k[0] in snapshot and k[1] < snapshot[k[0]].stop
        }
        gaps = asyncio.run(acc.fetch_gaps(self.kafka, self.topics.telemetry, self.devices))
        result = acc.account(snapshot, stored, gaps)
        detail = (
            f"[{phase}] sent={result.sent} stored={result.stored} lost={result.lost} "
            f"duplicated={result.duplicated} covered_by_gap={result.covered} "
            f"lost e.g. {list(result.lost_examples)} "
            f"duplicated e.g. {list(result.duplicated_examples)}"
        )
        assert result.sent >= self.last_sent + min_new, f"fleet stalled? {detail}"
        assert result.lost == 0, f"readings LOST {detail}"
        assert result.duplicated == 0, f"readings stored TWICE {detail}"
        assert result.covered == 0 and result.gap_conflicts == 0, f"edge dropped data {detail}"
        self.last_sent = result.sent
        say(detail)
        return result

    def check_incident(self, inc: Incident) -> acc.AlertDoc:
        """Exactly one threshold_high alert for ``inc``, opened and resolved once."""

        def resolved() -> list[acc.AlertDoc]:
            self.alive()
            docs = [a for a in self.alerts([inc.device]) if a.rule == "threshold_high"]
            assert len(docs) <= 1, f"[{inc.phase}] DUPLICATE alerts for {inc}: {docs}"
            return docs if docs and docs[0].status == "resolved" else []

        (alert,) = wait_for(f"[{inc.phase}] the alert of {inc} to resolve", resolved, SETTLE_S)
        assert inc.start_ms <= alert.opened_at <= inc.end_ms, (inc, alert)
        assert alert.resolved_at is not None and alert.resolved_at >= inc.end_ms - 1000
        changes = self.changes()
        mine = [(c.change, c.version) for c in changes if c.alert_id == alert.alert_id]
        assert sorted(mine) == [("opened", 1), ("resolved", alert.version)], (
            f"[{inc.phase}] changes published for {alert.alert_id}: {mine}"
        )
        integrity = acc.alert_integrity(self.alerts(), changes)
        assert not integrity.overlapping, f"[{inc.phase}] {integrity.overlapping}"
        repeats = set(integrity.repeated) - self.tolerated_repeats
        if inc.phase == "r":
            # A processor killed between publishing a change and storing it publishes
            # it again (same alert_id and version; receivers drop it: documented).
            self.tolerated_repeats |= repeats
        else:
            assert not repeats, f"[{inc.phase}] alert changes published twice: {sorted(repeats)}"
        say(f"[{inc.phase}] one alert: {alert}")
        return alert

    def node_down(self, name: str, node: int, down_s: float) -> None:
        """SIGKILL ``name``'s node ``node``, keep it down ``down_s`` while proving the
        rest of the cluster serves, start it again."""
        killed = kill9(self.stack, name, node=node)
        assert killed.by_sigkill, f"{name} node {node} was not killed by SIGKILL: {killed}"
        say(f"{name} node {node} pid {killed.pid} killed with SIGKILL")
        others = [n for n in (1, 2, 3) if n != node]
        with PortWatch("127.0.0.1", self.stack.node(name, node).port) as down:
            deadline = time.monotonic() + down_s
            served = all(self.stack.is_healthy(name, timeout=10.0, node=n) for n in others)
            while time.monotonic() < deadline:
                self.alive()
                time.sleep(1.0)
        assert down.always_refused, f"{name} node {node} answered while it was down: {down}"
        assert served, f"the other {name} nodes {others} did not serve while node {node} was down"
        self.stack.start_node(name, node, timeout=240.0)
        pid = self.stack.service_pid(name, node)
        assert pid not in (None, killed.pid)
        say(f"{name} node {node} started again and healthy, pid {pid}")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterRig]:
    base = os.environ.get(STACK_DIR_ENV)
    if base:
        root = Path(base) / "chaos_cluster"
        LocalStack(stack_dir=root).down()  # a leftover of an interrupted run
        shutil.rmtree(root, ignore_errors=True)
    else:
        root = tmp_path_factory.mktemp("cluster-stack")
    rig = ClusterRig(root, tmp_path_factory.mktemp("cluster-run"))
    try:
        rig.up()
        yield rig
    finally:
        rig.down()


def test_k_kafka_node_kill9(rig: ClusterRig) -> None:
    rig.alive()
    inc = rig.begin_incident("k", "s3-d01")
    time.sleep(3)
    before = sum(r.stop for r in rig.allocated().values())
    rig.node_down("kafka", 1, down_s=10.0)
    during = sum(r.stop for r in rig.allocated().values()) - before
    assert during >= 50, f"the fleet published only {during} readings around the kill"
    rig.end_incident(inc)
    rig.check_readings("k")
    rig.check_incident(inc)


def test_s_search_node_kill9(rig: ClusterRig) -> None:
    rig.alive()
    inc = rig.begin_incident("s", "s1-d01")
    time.sleep(3)
    rig.node_down("search", 1, down_s=20.0)
    rig.end_incident(inc)
    rig.check_readings("s")
    rig.check_incident(inc)


def assigned(svc: Service) -> int:
    """Partitions ``svc`` was given at its last assignment (0 before any)."""
    counts = re.findall(r"event=partitions_assigned count=(\d+)", svc.log_since(0))
    return int(counts[-1]) if counts else 0


def test_r_processor_kill9_during_the_rebalance_a_new_member_causes(rig: ClusterRig) -> None:
    """The rebalance is held open by freezing the second processor (SIGSTOP, for less
    than its session timeout) just before the third one asks to join: the group cannot
    finish that rebalance until the second rejoins. So the first processor, once it has
    revoked its partitions, dies mid-rebalance."""
    rig.alive()
    inc = rig.begin_incident("r", "s2-d01")
    time.sleep(3)
    first, second = rig.processors[0], rig.processors[1]
    assert first.pid is not None and second.pid is not None
    mark = first.log_size()
    third = rig.new_processor()
    third.start()
    say(f"[r] {third.name} started, pid {third.pid}")

    def third_about_to_join() -> bool:
        # aiokafka logs the subscription right before it looks up the coordinator and
        # sends its JoinGroup (the processor's telemetry group, not its -notify one).
        return any(
            "Subscribed to topic(s)" in line and rig.topics.telemetry in line
            for line in third.log_since(0).splitlines()
        )

    wait_for(f"{third.name} to subscribe", third_about_to_join, 120.0, every=0.05)
    os.kill(second.pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:

        def revoked() -> bool:
            return "event=partitions_revoked" in first.log_since(mark)

        limit = SESSION_TIMEOUT_MS / 1000 - 4.0
        wait_for("the first processor to revoke its partitions", revoked, limit, every=0.05)
        given_before_kill = assigned(third)
        old_pid = first.pid
        assert first.kill(signal.SIGKILL) == -signal.SIGKILL
        rig.killed.add(first.name)
    finally:
        os.kill(second.pid, signal.SIGCONT)
    held = time.monotonic() - frozen_at
    say(f"[r] {first.name} pid {old_pid} killed with SIGKILL mid-rebalance ({held:.1f} s frozen)")
    assert held < SESSION_TIMEOUT_MS / 1000, "the frozen processor may have left the group"
    # The kill came after the group revoked and before the newcomer got anything.
    assert given_before_kill == 0, "the rebalance was over before the kill"
    wait_for("the third processor to be given partitions", lambda: assigned(third) > 0, 120.0)
    say(f"[r] {third.name} was given {assigned(third)} partitions")
    rig.end_incident(inc)
    rig.check_readings("r")
    rig.check_incident(inc)


def test_z_everything_accounted_with_three_processors(rig: ClusterRig) -> None:
    assert rig.fleet is not None
    killed = rig.processors[0]
    killed.start()
    rig.killed.discard(killed.name)
    say(f"[z] {killed.name} started again, pid {killed.pid}: 3 processors in the group")
    inc = rig.begin_incident("z", "s3-d02")
    rig.end_incident(inc)
    rig.check_incident(inc)
    rig.alive()
    stopped_ms = now_ms()
    rig.fleet.stop()
    rig.fleet_stopped = True
    say("[z] fleet stopped")
    result = rig.check_readings("z", min_new=0)
    wait_for("the processors to commit everything (lag 0)", lambda: rig.lag() == 0, SETTLE_S)
    final = acc.account(rig.allocated(), rig.stored(rig.devices), [])
    assert final.unexpected == 0, f"stored readings no outbox allocated: {final}"
    assert final.duplicated == final.covered == final.gap_conflicts == 0, final
    assert final.lost == 0 and final.sent == result.sent, final
    docs = rig.alerts()
    changes = rig.changes()
    say(f"[z] {len(docs)} alert documents, {len(changes)} published changes")
    integrity = acc.alert_integrity(docs, changes)
    detail = f"{integrity} (tolerated repeats after the processor kill: {rig.tolerated_repeats})"
    assert not integrity.overlapping, detail
    assert not integrity.missing_documents, detail
    assert not integrity.unpublished, detail
    assert not integrity.stale_documents, detail
    assert set(integrity.repeated) <= rig.tolerated_repeats, detail
    assert sorted(i.phase for i in rig.incidents) == ["k", "r", "s", "z"]
    for i in rig.incidents:
        mine = [a for a in docs if a.device_id == i.device and a.rule == "threshold_high"]
        assert len(mine) == 1, (i, mine)
    score = acc.score_alerts(
        [acc.Incident("threshold", i.device, i.start_ms, i.end_ms) for i in rig.incidents],
        [a for a in docs if a.rule == "threshold_high"],
        since_ms=rig.run.started_ms,
        until_ms=stopped_ms,
    )
    assert score.alerted == score.injected == 4 and score.false_alerts == 0, score

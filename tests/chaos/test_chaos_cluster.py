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

After each case, exact accounting as in ``test_chaos_pipeline.py`` (both rigs are a
``testsupport.chaos_rig.ChaosRig``): every seq the outboxes allocated so far is stored
exactly once, and the case's incident (a probe held above its site's threshold while the
fault happens) has exactly one ``threshold_high`` alert, opened and resolved once on the
alerts topic. The faults are proven: a killed
process's exit status is -9, a node meant to be down refused every connection tried
twice a second, the cluster served meanwhile (the other nodes answered), and the node
came back under a new pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.local.stack import LocalStack, free_port
from testsupport.chaos import PortWatch, chaos_fleet, chaos_run, kill9
from testsupport.chaos_rig import ChaosRig, Progress, now_ms, running, stack_root, wait_for
from thermowatch.demo import Service, wait_topics
from thermowatch.demo.configs import gateway_config, merge_config, processor_config, write_toml

pytestmark = [pytest.mark.chaos, pytest.mark.cluster, pytest.mark.timeout(600)]

SITES = {"s1": ["s1-d01", "s1-d02"], "s2": ["s2-d01", "s2-d02"], "s3": ["s3-d01", "s3-d02"]}
INTERVAL_S = 0.5
SETTLE_S = 180.0
#: A read of the search cluster is tried again this long while its answer is retriable.
SEARCH_RETRY_S = 60.0
#: A killed processor leaves the group this soon (the default is 30 s); a frozen one
#: must be let go before it.
SESSION_TIMEOUT_MS = 15_000

say = Progress("cluster")


class ClusterRig(ChaosRig):
    """The cluster stack, 2 gateways, 2-3 processors, the fleet, and what was checked."""

    def __init__(self, root: Path, work: Path) -> None:
        stack = LocalStack(
            stack_dir=root,
            cluster=True,
            mqtt_port=free_port(span=2),
            # 3 nodes, 10 ports apart, each with its controller (Kafka) or transport
            # (search, + 100) port.
            kafka_port=free_port(span=21),
            search_port=free_port(span=120),
        )
        super().__init__(
            stack,
            chaos_run(work, "cluster", SITES),
            say,
            settle_s=SETTLE_S,
            republish_phase="r",
            search_retry_s=SEARCH_RETRY_S,
        )
        self.gateways: list[Service] = []
        self.processors: list[Service] = []
        #: Processors killed on purpose (not expected alive until started again).
        self.killed: set[str] = set()

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
        self.wait_flowing()
        say("pipeline flowing")

    def down(self) -> None:
        self.stop_fleet()
        for svc in (*self.processors, *self.gateways):
            with contextlib.suppress(Exception):
                svc.stop()
        self.stack_down()

    def alive(self) -> None:
        for svc in (*self.gateways, *self.processors):
            if svc.proc is not None and svc.name not in self.killed:
                assert svc.alive, f"{svc.name} exited:\n{svc.tail(40)}"

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
    root = stack_root(tmp_path_factory, "chaos_cluster")
    yield from running(ClusterRig(root, tmp_path_factory.mktemp("cluster-run")))


def test_k_kafka_node_kill9(rig: ClusterRig) -> None:
    rig.alive()
    inc = rig.begin_incident("k", "s3-d01")
    time.sleep(3)
    before = sum(r.stop for r in rig.allocated().values())
    rig.node_down("kafka", 1, down_s=10.0)
    during = sum(r.stop for r in rig.allocated().values()) - before
    assert during >= 50, f"the fleet published only {during} readings around the kill"
    rig.end_and_check(inc)


def test_s_search_node_kill9(rig: ClusterRig) -> None:
    rig.alive()
    inc = rig.begin_incident("s", "s1-d01")
    time.sleep(3)
    rig.node_down("search", 1, down_s=20.0)
    rig.end_and_check(inc)


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
    rig.end_and_check(inc)


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
    rig.stop_fleet()
    say("[z] fleet stopped")
    result = rig.check_readings("z", min_new=0)
    rig.check_accounted(result)
    rig.check_alerted(["k", "r", "s", "z"], stopped_ms)

"""The broker-crash case on a 2-node Artemis cluster: one node killed while both hold a backlog.

A private stack in the cluster profile with only the brokers clustered
(``LocalStack(cluster=True, nodes={"kafka": 1, "search": 1})``): Artemis nodes
1 and 2 (static cluster connection, ``ON_DEMAND`` load balancing), one Kafka,
one search node. First, without the pipeline, two members of one shared
subscription on different nodes must share what is published on either node,
each message delivered once, and each member getting messages published on the
other node.

Then the sequence of :func:`testsupport.broker_backlog.restart_with_backlog`:
30 devices at 10 readings/s spread over both nodes, gateway 1 on node 1 and
gateway 2 on node 2 in one shared subscription, the edges **without receipts**
(a reading leaves its outbox at the broker's PUBACK). Kafka is killed, so at
least 5,000 acknowledged readings wait in the brokers' queues (the observer, on
node 1, sees the readings of node 2's devices too: the cluster routes them).
Then node 2 is killed with SIGKILL (exit status -9, its port refusing every
connection while down) and stays down for 10 s while node 1 keeps acknowledging
its devices' readings; node 2 is started again, then Kafka, and every reading of
the run must be in Kafka and stored exactly once.

No HA in this setup: what node 2 held (the readings in its queue for gateway 2,
and those of its devices) stays in its journal while it is down and is delivered
only after it restarts (what node 1 routes to node 2 meanwhile waits in node 1's
store-and-forward queue, as Artemis documents its cluster bridges; not looked at
here). Nothing is lost, nothing is stored twice; Kafka may hold a reading twice
(gateway 2 had it in flight when its node died: delivered again).

Markers ``chaos`` and ``artemis`` (``make test-artemis``).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.local.pki import client_tls
from deploy.local.stack import STACK_DIR_ENV, LocalStack, free_port
from testsupport.broker_backlog import BrokerFault, restart_with_backlog

pytestmark = [pytest.mark.chaos, pytest.mark.artemis, pytest.mark.timeout(600)]

#: Artemis nodes 1 and 2 (its cluster profile); Kafka and the search server one node each.
NODES = {"kafka": 1, "search": 1}


@pytest.fixture(scope="module")
def artemis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Two Artemis nodes, one Kafka and one search node on free ports, for this module."""
    base = os.environ.get(STACK_DIR_ENV)
    if base:
        root = Path(base) / "chaos_artemis_cluster"
        LocalStack(stack_dir=root).down()
        shutil.rmtree(root, ignore_errors=True)
    else:
        root = tmp_path_factory.mktemp("artemis_cluster")
    stack = LocalStack(
        stack_dir=root,
        mqtt_port=free_port(span=2),
        kafka_port=free_port(span=1),
        search_port=free_port(span=100),
        # Node 2 listens on the base port + 10, its cluster listener on that + 2.
        ports={"artemis": free_port(span=12)},
        cluster=True,
        nodes=NODES,
    )
    try:
        stack.up(["artemis", "kafka", "search"], timeout=300.0)
        yield stack
    finally:
        stack.down()


class _Client:
    """``admin`` on one node, subscribed to ``topic`` (e.g. ``$share/<group>/<filter>``)
    unless it is None; collects the payloads it gets."""

    def __init__(self, mqtt: dict[str, Any], client_id: str, topic: str | None = None) -> None:
        from paho.mqtt.client import Client
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.enums import MQTTProtocolVersion as V

        self.payloads: list[bytes] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=V.MQTTv5)
        tls = client_tls(mqtt, "admin")
        tls.apply(self.client)
        if topic is None:
            self.client.on_connect = lambda *_: subscribed.set()
        else:
            self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
            self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(str(mqtt["host"]), tls.port, clean_start=True)
        self.client.loop_start()
        if not subscribed.wait(30):
            self.close()
            raise RuntimeError(f"{client_id} could not connect (and subscribe to {topic})")

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._lock:
            self.payloads.append(bytes(msg.payload))

    def got(self) -> list[bytes]:
        with self._lock:
            return list(self.payloads)

    def clear(self) -> None:
        with self._lock:
            self.payloads.clear()

    def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1; returns at the PUBACK."""
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_shared_subscription_spans_the_nodes(artemis_cluster: LocalStack) -> None:
    """Members on node 1 and node 2 share every message, published on either node, once."""
    nodes = [n.endpoint() for n in artemis_cluster.nodes("artemis")]
    assert [n["port"] for n in nodes] == [nodes[0]["port"], nodes[0]["port"] + 10]
    topic = "thermowatch/cl/probe/telemetry"
    members = [
        _Client(ep, f"admin:share-{i}", f"$share/probe/{topic}") for i, ep in enumerate(nodes, 1)
    ]
    publishers = [_Client(ep, f"admin:pub-{i}") for i, ep in enumerate(nodes, 1)]
    sent = [f"{i}:{k}".encode() for i in (1, 2) for k in range(100)]
    try:
        # The nodes tell each other about the new queues within a moment: until
        # node 2's member gets a message published on node 1.
        deadline = time.monotonic() + 30
        probe = 0
        while time.monotonic() < deadline and not members[1].got():
            probe += 1
            publishers[0].publish(topic, f"warmup:{probe}".encode())
            time.sleep(0.5)
        time.sleep(1.0)
        for m in members:
            m.clear()
        for payload in sent:
            publishers[int(payload.split(b":")[0]) - 1].publish(topic, payload)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = [p for m in members for p in m.got() if not p.startswith(b"warmup:")]
            if len(got) >= len(sent):
                break
            time.sleep(0.5)
        time.sleep(2.0)  # anything delivered twice would arrive by now
    finally:
        for m in (*members, *publishers):
            m.close()
    per_member = [[p for p in m.got() if not p.startswith(b"warmup:")] for m in members]
    # member -> {node the message was published on: how many it got}
    origins = [
        {n: sum(p.startswith(b"%d:" % n) for p in got) for n in (1, 2)} for got in per_member
    ]
    print(f"shared subscription: sent={len(sent)} member 1, 2 got (by node published on) {origins}")
    every = [p for got in per_member for p in got]
    assert sorted(every) == sorted(sent), "each message to exactly one member"
    # Across the nodes: each member got messages published on the other node too.
    assert origins[0][2] > 0 and origins[1][1] > 0, f"no message crossed the nodes: {origins}"


def test_artemis_node_crash_loses_no_acknowledged_reading(
    artemis_cluster: LocalStack, tmp_path: Path
) -> None:
    fault = BrokerFault(
        kill=True,
        broker="artemis",
        receipts=False,
        gateways=2,
        share_group="gateways",
        nodes=2,
        node=2,
        down_s=10.0,
    )
    started = time.monotonic()
    got = restart_with_backlog(artemis_cluster, tmp_path, fault, store=True)
    print(
        f"held={got.held} allocated={got.allocated} lost={len(got.final.lost)} "
        f"kafka_copies={got.kafka_copies} stored_twice={len(got.stored_twice)} "
        f"not_stored={len(got.not_stored)} left_in_outboxes={got.left_in_outboxes} "
        f"seen_by_node={got.seen_by_node} acked_while_down={got.acked_while_down} "
        f"broker_exit={got.broker_exit} {got.broker_down} kafka_exit={got.kafka_exit} "
        f"{got.kafka_down} seconds={time.monotonic() - started:.0f}\n"
        f"  settled: {got.settled}\n  final: {got.final}"
    )
    # The faults are proven first (pytest.fail, never an AssertionError).
    if got.held < fault.backlog or got.broker_exit != -signal.SIGKILL:
        pytest.fail(
            f"no node crash with a backlog: held {got.held}, node 2 exit {got.broker_exit}\n"
            f"{got.log_tail}",
            pytrace=False,
        )
    if not (got.broker_down and got.broker_down.always_refused):
        pytest.fail(f"node 2 was not down until its restart: {got.broker_down}", pytrace=False)
    if got.kafka_exit != -signal.SIGKILL or not (got.kafka_down and got.kafka_down.always_refused):
        pytest.fail(f"Kafka was not down throughout: {got.kafka_down}", pytrace=False)
    if not got.services_alive:
        pytest.fail(f"a pipeline service exited:\n{got.log_tail}", pytrace=False)
    # A cluster, not two brokers side by side: the observer on node 1 saw node 2's
    # devices, and node 1 kept acknowledging readings while node 2 was down.
    if not got.seen_by_node.get(2):
        pytest.fail(f"node 1 saw nothing of node 2's devices: {got.seen_by_node}", pytrace=False)
    if got.acked_while_down <= 0:
        pytest.fail("node 1 acknowledged nothing while node 2 was down", pytrace=False)
    # Without receipts an edge keeps nothing it had a PUBACK for: whatever the
    # node lost would be lost for good.
    assert not got.settled, f"after the restart: {got.settled}"
    assert not got.final, f"after the fleet stopped: {got.final}"
    assert not got.not_stored, f"{len(got.not_stored)} never stored: {got.not_stored[:10]}"
    assert not got.stored_twice, f"stored twice: {got.stored_twice[:10]}"

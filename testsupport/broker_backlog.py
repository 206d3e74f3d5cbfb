"""The MQTT broker stopped while it holds a backlog for the gateway(s): the one sequence.

A fleet of 30 devices publishes 10 readings/s each. Kafka is killed, so the
gateways stop acknowledging; past each gateway's in-flight window
(``receive_maximum``, cut to 20 so that the backlog waits in the broker, not
in a gateway's memory) the broker queues the readings in the gateways'
persistent session. For a device without receipts those readings are
delivered (they had their PUBACK): only the broker has them. An observer
subscribed beside the gateways counts what the broker routed meanwhile, so the
backlog is measured at the broker, not inferred from the devices.

Then Mosquitto is stopped (SIGTERM: a restart, it saves its database; or
SIGKILL: a crash, after a forced save when its persistence file is to be
deleted, as if the broker's host lost its disk), started again, Kafka started
again, and the accounting waits until it is stable -- every reading of a
snapshot of the outboxes in Kafka, or nothing changing any more, neither in
Kafka nor in the outboxes, for longer than the edges wait for a receipt --
before it says which missing reading is late (still in its outbox: the edge
sends it again) and which is lost (gone from the outbox, never delivered).
The fleet then stops and the same is done for everything it allocated; with
``store``, the processor runs too and each reading must be stored in the
search server exactly once.

The broker is Mosquitto, or the optional Artemis (``BrokerFault.broker``),
which syncs its journal before each PUBACK: with ``receipts`` off the edge
deletes a reading at that PUBACK, so only a broker that keeps what it
acknowledged loses nothing in a crash.

On a broker cluster (``BrokerFault.nodes`` > 1: the Artemis nodes of the cluster
profile) the devices and gateways are spread over the nodes (gateway ``i`` on
node ``i``, the devices in turn), the observer sits on a node that stays up, and
only node ``BrokerFault.node`` is stopped, for ``down_s``, while the other nodes
keep taking readings; its port must refuse every connection meanwhile.

Run by ``tests/chaos/test_chaos_broker_backlog.py`` (the property, in ``make
test``) and by ``benchmarks/gateway/broker_restart_backlog.py`` (the
experiment, with more variants).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.local.pki import client_tls
from deploy.local.stack import LocalStack
from stagekit.kafka import KafkaTarget
from telemetry_contract import kafka_topics
from testsupport.chaos import (
    PortWatch,
    WhereMissing,
    chaos_fleet,
    chaos_run,
    kill9,
    where_missing,
)
from thermowatch.accounting import (
    allocated_from_outboxes,
    fetch_reading_keys,
    fetch_stored,
    pending_in_outboxes,
    reading_keys,
    wait_devices_in_topic,
)
from thermowatch.demo import (
    DemoRun,
    Service,
    demo_sites,
    gateway_config,
    merge_config,
    pipeline_services,
    wait_topics,
)
from thermowatch.demo.configs import write_toml

__all__ = [
    "RECEIPT_TIMEOUT_S",
    "SITES",
    "BacklogResult",
    "BrokerFault",
    "restart_with_backlog",
]

#: The fleet: the demo's 30 devices on 3 sites, 10 readings/s each.
SITES = demo_sites(3, 10)
INTERVAL_S = 0.1
#: How long an edge waits for a receipt before it sends a reading again: short,
#: to fit the test, and what the settling below waits beyond.
RECEIPT_TIMEOUT_S = 10.0
#: Accounting is stable when nothing changed for this long (longer than a receipt wait).
STABLE_S = 2 * RECEIPT_TIMEOUT_S + 5.0


@dataclass(frozen=True)
class BrokerFault:
    """How the broker is stopped, and what it finds when it starts again."""

    #: SIGKILL (a crash: no final save) instead of SIGTERM (a restart).
    kill: bool
    #: Delete the persistence file before the restart (the broker's host lost its disk).
    wipe: bool = False
    #: Gateways running; more than one share the subscription.
    gateways: int = 1
    #: The gateways' shared-subscription group ("" for a plain subscription).
    share_group: str = ""
    #: At least this many readings must wait in the broker for the gateways.
    backlog: int = 5000
    #: The stack service that is the broker: ``mosquitto`` or ``artemis``.
    broker: str = "mosquitto"
    #: Edges keep each reading until the gateway's receipt (False: until the PUBACK).
    receipts: bool = True
    #: The broker's nodes that devices and gateways are spread over (a cluster's).
    nodes: int = 1
    #: The node stopped (1 .. nodes); the others stay up.
    node: int = 1
    #: How long the stopped broker (node) stays down before it is started again.
    down_s: float = 0.0

    def node_of_gateway(self, i: int) -> int:
        """Gateway ``i`` (1-based) connects to this node.

        >>> [BrokerFault(kill=True, nodes=2, gateways=3).node_of_gateway(i) for i in (1, 2, 3)]
        [1, 2, 1]
        """
        return (i - 1) % self.nodes + 1

    def node_of_device(self, index: int) -> int:
        """The ``index``-th device (0-based, in the run's order) connects to this node.

        >>> [BrokerFault(kill=True, nodes=2).node_of_device(j) for j in range(4)]
        [1, 2, 1, 2]
        """
        return index % self.nodes + 1

    @property
    def observer_node(self) -> int:
        """Where the observer subscribes: the first node that is not stopped (node 1
        when there is only one).

        >>> BrokerFault(kill=True, nodes=2, node=1).observer_node
        2
        """
        return next((n for n in range(1, self.nodes + 1) if n != self.node), 1)


@dataclass
class BacklogResult:
    """What one stop of the broker did to the readings it held."""

    fault: BrokerFault
    allocated: int = 0
    #: Readings the broker routed while Kafka was down, not in Kafka, beyond what
    #: the gateways' in-flight windows can hold: what only the broker had.
    held: int = 0
    #: Mosquitto's exit status when killed (``-9``), None when stopped.
    broker_exit: int | None = None
    #: Connection attempts to the stopped broker (node)'s port until its restart.
    broker_down: PortWatch | None = None
    #: node -> readings of that node's devices the observer saw (on its own node):
    #: on a cluster, what another node routed to it.
    seen_by_node: dict[int, int] = field(default_factory=dict)
    #: Readings of the devices on the nodes that stayed up, allocated and acknowledged
    #: (gone from the outbox) while the stopped node was down.
    acked_while_down: int = 0
    #: Mosquitto logged its final save ("Saving in-memory database").
    broker_saved: bool = False
    #: Files in the persistence directory before the restart (empty after a wipe).
    persistence_files: list[str] = field(default_factory=list)
    #: Bytes of the persistence file that the wipe deleted (after a forced save).
    wiped_bytes: int = 0
    kafka_exit: int | None = None
    #: Connection attempts to Kafka's port while it was down, and how many were refused.
    kafka_down: PortWatch | None = None
    #: Of a snapshot of the outboxes, once the accounting was stable (fleet running).
    settled: WhereMissing = field(default_factory=WhereMissing)
    #: Of everything allocated, after the fleet stopped.
    final: WhereMissing = field(default_factory=WhereMissing)
    #: Of ``final.lost``: allocated only after the broker was up again (not the backlog).
    lost_after_restart: int = 0
    #: Readings in Kafka more than once (harmless: stored once, by ``device_id:seq``).
    kafka_copies: int = 0
    #: Readings stored more than once, and readings in Kafka never stored (``store``).
    stored_twice: list[tuple[str, int]] = field(default_factory=list)
    not_stored: list[tuple[str, int]] = field(default_factory=list)
    left_in_outboxes: int = 0
    services_alive: bool = True
    log_tail: str = ""


class Observer:
    """A plain MQTT subscriber beside the gateways: the readings the broker routed."""

    def __init__(self, mqtt: Mapping[str, Any], client_id: str) -> None:
        from paho.mqtt.client import Client
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.enums import MQTTProtocolVersion as V

        self.keys: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=V.MQTTv5)
        tls = client_tls(mqtt, "admin")  # TLS; a service logs in with its password
        tls.apply(self._client)
        self._client.on_connect = lambda c, *_: c.subscribe("thermowatch/+/+/telemetry", qos=0)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(str(mqtt["host"]), tls.port, clean_start=True)
        self._client.loop_start()
        if not self._subscribed.wait(30):
            self.close()
            raise RuntimeError("the observer could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        found = reading_keys([msg.payload])
        with self._lock:
            self.keys.update(found)

    def seen(self) -> set[tuple[str, int]]:
        with self._lock:
            return set(self.keys)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def restart_with_backlog(
    stack: LocalStack,
    work: Path,
    fault: BrokerFault,
    *,
    receive_maximum: int = 20,
    store: bool = False,
    settle_s: float = 180.0,
) -> BacklogResult:
    """Build a backlog in the broker, stop it as ``fault`` says, account for every reading.

    ``stack`` has Mosquitto and Kafka up (and the search server with
    ``store``); they are up again on return. Kafka is killed with SIGKILL;
    the returned result carries the proofs of the faults with the accounting.
    """
    run = chaos_run(work, "backlog", SITES)

    def broker_at(node: int) -> dict[str, Any]:
        return dict(stack.node(fault.broker, node).endpoint())

    # The pipeline's MQTT endpoint is the broker under test (its node 1 on a cluster).
    ep = {**stack.endpoints(), "mosquitto": broker_at(1)}
    device_node = {d: fault.node_of_device(j) for j, d in enumerate(run.devices)}
    topics = kafka_topics(run.kafka_prefix)
    overrides: dict[str, Any] = {
        "mqtt": {"share_group": fault.share_group, "receive_maximum": receive_maximum},
        "receipts": {"enabled": fault.receipts},
    }
    client_ids = [f"gateway:{run.run_id}-{i}" for i in range(1, fault.gateways + 1)]
    gateway, processor = pipeline_services(
        run, ep, gateway_overrides=merge_config(overrides, {"mqtt": {"client_id": client_ids[0]}})
    )
    gateways = [gateway]
    for i in range(2, fault.gateways + 1):
        at = {**ep, "mosquitto": broker_at(fault.node_of_gateway(i))}
        cfg = merge_config(gateway_config(run, at), overrides)
        cfg = merge_config(
            cfg,
            {"gateway": {"id": f"demo-{run.run_id}-{i}"}, "mqtt": {"client_id": client_ids[i - 1]}},
        )
        path = run.run_dir / f"gateway-{i}.toml"
        write_toml(path, cfg)
        log_file = run.run_dir / "logs" / f"gateway-{i}.log"
        gateways.append(Service(f"gateway-{i}", "gateway", path, log_file))
    services = [*gateways, processor] if store else gateways
    fleet = chaos_fleet(
        run,
        ep["mosquitto"],
        INTERVAL_S,
        outbox_options={"receipt_timeout_s": RECEIPT_TIMEOUT_S, "receipts": fault.receipts},
        mqtt_ports={d: int(broker_at(n)["port"]) for d, n in device_node.items() if n != 1},
    )
    kafka = ep["kafka"]
    got = BacklogResult(fault)
    for svc in services:
        svc.start()
    try:
        asyncio.run(wait_topics(kafka, topics.all(), gateway, 120.0))
        # Artemis drops a publish nobody subscribed to with a success PUBACK (never
        # reason 16): without receipts nothing would send it again, so the fleet
        # starts only once every gateway has connected and sent its SUBSCRIBE.
        for svc in gateways:
            _wait_logged(svc, "event=mqtt_connected", 60.0)
        fleet.start()
        if not wait_devices_in_topic(kafka, topics.telemetry, run.devices, timeout_s=120):
            raise RuntimeError(f"readings did not reach Kafka:\n{gateway.tail(30)}")
        paths = fleet.outbox_paths()
        outboxes = {d: paths[d] for d in run.devices}
        observer = Observer(broker_at(fault.observer_node), f"admin:observer-{run.run_id}")
        watch = got.kafka_down = PortWatch(str(ep["kafka"]["host"]), int(ep["kafka"]["port"]))
        try:
            got.kafka_exit = kill9(stack, "kafka").exit_code
            watch.start()
            # Allocated after Kafka died: none of these can be in Kafka.
            after = {d: r.stop for d, r in allocated_from_outboxes(outboxes).items()}
            window = fault.gateways * receive_maximum
            deadline = time.monotonic() + 60 + fault.backlog * INTERVAL_S / len(run.devices)
            while time.monotonic() < deadline:
                routed = observer.seen()
                got.held = sum(1 for d, s in routed if s >= after.get(d, 1 << 62)) - window
                if got.held >= fault.backlog:
                    break
                time.sleep(0.5)
            for d, _s in observer.seen():
                got.seen_by_node[device_node[d]] = got.seen_by_node.get(device_node[d], 0) + 1
        finally:
            observer.close()
        stopped = {d: r.stop for d, r in allocated_from_outboxes(outboxes).items()}
        _stop_broker(stack, fault, got)
        time.sleep(fault.down_s)
        if got.broker_down is not None:
            got.broker_down.stop()
        up = [d for d, n in device_node.items() if n != fault.node]
        if fault.nodes > 1 and up:
            got.acked_while_down = _acked_since(stopped, {d: outboxes[d] for d in up})
        if fault.nodes > 1:
            stack.start_node(fault.broker, fault.node, timeout=120.0)
        else:
            stack.start(fault.broker, timeout=120.0)
        restarted = {d: r.stop for d, r in allocated_from_outboxes(outboxes).items()}
        watch.stop()
        stack.start("kafka", timeout=240.0)
        time.sleep(5.0)
        snapshot = allocated_from_outboxes(outboxes)
        missing = _settle(kafka, topics.telemetry, snapshot, outboxes, settle_s, STABLE_S)
        got.settled = where_missing(missing, outboxes)
        fleet.stop()  # each agent flushes its outbox (with receipts: waits for them, bounded)
        allocated = allocated_from_outboxes(outboxes)
        got.allocated = sum(len(r) for r in allocated.values())
        # No edge sends anything any more: stable once the gateways drained.
        missing = _settle(kafka, topics.telemetry, allocated, outboxes, 60.0, 10.0)
        got.final = where_missing(missing, outboxes)
        got.lost_after_restart = sum(1 for d, s in got.final.lost if s >= restarted[d])
        keys = asyncio.run(fetch_reading_keys(kafka, topics.telemetry))
        got.kafka_copies = sum(n - 1 for n in keys.values())
        got.left_in_outboxes = sum(len(s) for s in pending_in_outboxes(outboxes).values())
        if store:
            _account_stored(ep, run, [k for k in keys if k[0] in allocated], got)
        got.services_alive = all(svc.alive for svc in services)
        got.log_tail = "\n".join(f"--- {s.name}\n{s.tail(15)}" for s in services)
        return got
    finally:
        fleet.stop()
        for svc in services:
            svc.stop()
        if got.kafka_down is not None:
            got.kafka_down.stop()
        if got.broker_down is not None:
            got.broker_down.stop()
        for name in (fault.broker, "kafka"):  # up again for the next case, whatever failed
            if any(n.process.pid() is None for n in stack.nodes(name)):
                stack.start(name, timeout=240.0)
        # A gateway's persistent session outlives it (and a broker restart): left
        # behind, it would take the next case's readings (a success PUBACK, not 16).
        # Ended, and saved ended: a crash restores the last save, stale sessions too.
        # A session lives on the node its client connected to.
        for i, client_id in enumerate(client_ids, start=1):
            forget_sessions(broker_at(fault.node_of_gateway(i)), "gateway", [client_id])
        if fault.broker == "mosquitto":  # Artemis has it on disk already
            _save_broker(stack)


def _wait_logged(svc: Service, text: str, timeout_s: float) -> None:
    """Wait until ``svc`` logged ``text`` (the gateway logs its subscribe so)."""
    deadline = time.monotonic() + timeout_s
    while text not in svc.log_since(0):
        if not svc.alive or time.monotonic() > deadline:
            raise RuntimeError(f"{svc.name} did not log {text!r}:\n{svc.tail(30)}")
        time.sleep(0.2)


def forget_sessions(mqtt: Mapping[str, Any], user: str, client_ids: list[str]) -> None:
    """End the persistent sessions of ``client_ids`` on the broker: each is taken
    over with a clean start and no session expiry, then disconnected."""
    from paho.mqtt.client import Client
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.enums import MQTTProtocolVersion as V

    for client_id in client_ids:
        client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=V.MQTTv5)
        tls = client_tls(mqtt, user)
        tls.apply(client)
        connected = threading.Event()
        client.on_connect = lambda *_, done=connected: done.set()
        client.connect(str(mqtt["host"]), tls.port, clean_start=True)
        client.loop_start()
        try:
            if not connected.wait(30):
                raise RuntimeError(f"could not connect as {client_id} to end its session")
        finally:
            client.disconnect()
            client.loop_stop()


def _acked_since(since: Mapping[str, int], outboxes: Mapping[str, Path]) -> int:
    """Readings allocated from seq ``since[device]`` on and no longer in the outbox
    (acknowledged: the edges run without receipts here)."""
    now = allocated_from_outboxes(outboxes)
    pending = pending_in_outboxes(outboxes)
    return sum(
        sum(1 for s in range(since.get(d, r.stop), r.stop) if s not in pending.get(d, set()))
        for d, r in now.items()
    )


def _stop_broker(stack: LocalStack, fault: BrokerFault, got: BacklogResult) -> None:
    """Stop the broker (its node ``fault.node`` on a cluster) as ``fault`` says; record
    the proofs in ``got`` and start watching its port."""
    broker = fault.broker
    svc = stack.node(broker, fault.node if fault.nodes > 1 else None)
    data = stack.data_dir(svc.node_name)
    if fault.wipe and broker != "mosquitto":
        raise ValueError(f"wipe: only Mosquitto's persistence file is wiped, not {broker}'s")
    if fault.kill and fault.wipe:  # put the backlog on disk first: the wipe must delete it
        _save_broker(stack)
    log_file = svc.process.log_file
    mark = log_file.stat().st_size
    if fault.kill:  # a crash: no final save
        got.broker_exit = kill9(stack, broker, node=svc.node if fault.nodes > 1 else None).exit_code
    elif fault.nodes > 1:
        stack.stop_node(broker, svc.node)
    else:
        stack.stop(broker)  # SIGTERM: Mosquitto saves its database
    got.broker_down = PortWatch(svc.host, svc.port)
    got.broker_down.start()
    with open(log_file, "rb") as fh:
        fh.seek(mark)
        got.broker_saved = b"Saving in-memory database" in fh.read()
    if fault.wipe:
        for path in list(data.iterdir()):
            got.wiped_bytes += path.stat().st_size
            path.unlink()
    got.persistence_files = sorted(p.name for p in data.iterdir())


def _save_broker(stack: LocalStack, timeout: float = 30.0) -> None:
    """Make Mosquitto write its database now; wait until the file is new."""
    data = stack.data_dir("mosquitto")
    before = {p: p.stat().st_mtime_ns for p in data.glob("*.db")}
    # SIGUSR1: "write the in-memory database to disk" (mosquitto(8)).
    stack.kill("mosquitto", signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = {p: p.stat().st_mtime_ns for p in data.glob("*.db")}
        if any(before.get(p) != t for p, t in now.items()):  # renamed in place when complete
            return
        time.sleep(0.2)
    raise RuntimeError("Mosquitto did not save its database after SIGUSR1")


def _settle(
    kafka: KafkaTarget,
    topic: str,
    allocated: Mapping[str, range],
    outboxes: Mapping[str, Path],
    timeout_s: float,
    stable_s: float,
) -> list[tuple[str, int]]:
    """The allocated readings not in ``topic`` once none is missing, or once neither
    Kafka nor the outboxes changed for ``stable_s`` (or after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    last: tuple[object, ...] = ()
    since = time.monotonic()
    while True:
        keys = asyncio.run(fetch_reading_keys(kafka, topic))
        missing = [(d, s) for d, seqs in allocated.items() for s in seqs if (d, s) not in keys]
        if not missing or time.monotonic() >= deadline:
            return missing
        # Only the allocated readings count: a running fleet adds new ones all the time.
        pending = pending_in_outboxes({d: outboxes[d] for d in allocated})
        waiting = tuple(
            sorted((d, sum(1 for s in seqs if s in allocated[d])) for d, seqs in pending.items())
        )
        state = (tuple(missing), waiting)
        if state != last:
            last, since = state, time.monotonic()
        elif time.monotonic() - since >= stable_s:
            return missing
        time.sleep(3.0)


def _account_stored(
    ep: Mapping[str, Any], run: DemoRun, in_kafka: list[tuple[str, int]], got: BacklogResult
) -> None:
    """Every reading in Kafka stored exactly once (waits, bounded, for the processor).

    What never reached Kafka is already counted (late or lost) by the caller.
    """
    server = run.search_settings(ep)
    pattern = f"{run.index_prefix}readings-*"
    deadline = time.monotonic() + 120.0
    while True:
        stored = fetch_stored(server, pattern, run.devices)
        got.not_stored = sorted(k for k in in_kafka if k not in stored)
        if not got.not_stored or time.monotonic() >= deadline:
            break
        time.sleep(3.0)
    got.stored_twice = sorted(k for k, n in stored.items() if n > 1)

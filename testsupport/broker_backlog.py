"""Mosquitto stopped while it holds a backlog for the gateway: the one sequence.

Kafka is stopped under a running fleet, so the gateway stops acknowledging;
past its in-flight window (``receive_maximum``) the broker queues the devices'
readings in the gateway's persistent session. For the devices those readings
are delivered (they had their PUBACK): only the broker has them. Then
Mosquitto is stopped (SIGTERM, or SIGKILL: a crash) and started again, Kafka
is started, and every seq the agents allocated is looked up in the Kafka
topic.

Run by ``tests/chaos/test_chaos_broker_backlog.py`` (the property, in
``make test``) and by ``benchmarks/gateway/broker_restart_backlog.py`` (the
experiment, with more variants).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.stack import LocalStack
from telemetry_contract import kafka_topics
from thermowatch.accounting import (
    allocated_from_outboxes,
    fetch_reading_keys,
    pending_in_outboxes,
    wait_devices_in_topic,
    wait_missing_in_topic,
)
from thermowatch.demo import DemoFleet, DemoRun, pipeline_services, steady_plan, wait_topics

__all__ = ["SITES", "BacklogResult", "restart_with_backlog"]

#: The fleet: 3 devices on 2 sites, 10 readings/s each.
SITES = {"s1": ["s1-d01", "s1-d02"], "s2": ["s2-d01"]}


@dataclass
class BacklogResult:
    """What one stop of the broker did to the readings it held."""

    allocated: int
    #: Acknowledged to the devices but not in Kafka when the broker stopped (a
    #: lower bound: acknowledged outbox rows are deleted in batches).
    held: int
    missing: list[tuple[str, int]] = field(default_factory=list)
    left_in_outboxes: int = 0
    gateway_alive: bool = True


def restart_with_backlog(
    stack: LocalStack,
    work: Path,
    *,
    share_group: str,
    backlog_s: float,
    kill: bool,
    receive_maximum: int,
    settle_s: float = 120.0,
) -> BacklogResult:
    """Build a backlog in the broker, stop it (SIGKILL if ``kill``), count the losses.

    ``stack`` has Mosquitto and Kafka up; they are up again on return.
    """
    run = DemoRun(
        run_id=f"backlog{uuid.uuid4().hex[:6]}",
        run_dir=work / "run",
        w1_dir=work / "w1",
        sites={s: list(d) for s, d in SITES.items()},
        duration_s=3600.0,
    )
    ep = stack.endpoints()
    topics = kafka_topics(run.kafka_prefix)
    gateway, _ = pipeline_services(
        run,
        ep,
        gateway_overrides={
            "mqtt": {"share_group": share_group, "receive_maximum": receive_maximum}
        },
    )
    fleet = DemoFleet(
        steady_plan(SITES),
        run_dir=run.run_dir,
        w1_dir=run.w1_dir,
        mqtt=ep["mosquitto"],
        run_id=run.run_id,
        interval_s=0.1,
        mqtt_options={"reconnect_min_s": 0.5, "reconnect_max_s": 1.0},
    )
    bootstrap = ep["kafka"]["bootstrap"]
    gateway.start()
    try:
        asyncio.run(wait_topics(bootstrap, topics.all(), gateway, 120.0))
        fleet.start()
        wait_devices_in_topic(bootstrap, topics.telemetry, run.devices, timeout_s=120)
        in_kafka = asyncio.run(fetch_reading_keys(bootstrap, topics.telemetry))
        stack.stop("kafka")
        time.sleep(backlog_s)  # readings pile up in the gateway's session
        paths = fleet.outbox_paths()
        outboxes = {d: paths[d] for d in run.devices}
        at_stop = allocated_from_outboxes(outboxes)
        unacked = pending_in_outboxes(outboxes)
        held = sum(
            1
            for d, seqs in at_stop.items()
            for s in seqs
            if s not in unacked[d] and (d, s) not in in_kafka
        )
        if kill:
            stack.kill("mosquitto")  # a crash: no final save of the database
        else:
            stack.stop("mosquitto")  # SIGTERM: Mosquitto saves its database
        time.sleep(1.0)
        stack.start("mosquitto", timeout=120.0)
        stack.start("kafka", timeout=240.0)
        time.sleep(15.0)
        fleet.stop()  # each agent flushes its outbox
        allocated = allocated_from_outboxes(outboxes)
        pending = pending_in_outboxes(outboxes)
        missing = wait_missing_in_topic(
            bootstrap, topics.telemetry, allocated, timeout_s=settle_s, poll_s=5.0
        )
        return BacklogResult(
            allocated=sum(len(r) for r in allocated.values()),
            held=held,
            missing=missing,
            left_in_outboxes=sum(len(s) for s in pending.values()),
            gateway_alive=gateway.alive,
        )
    finally:
        fleet.stop()
        gateway.stop()

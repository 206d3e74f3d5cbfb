"""Experiment (not a test): what a Mosquitto restart loses while the gateway is behind.

    python benchmarks/gateway/broker_restart_backlog.py                 # shared and plain
    python benchmarks/gateway/broker_restart_backlog.py --modes shared --backlog-s 30
    python benchmarks/gateway/broker_restart_backlog.py --kill          # broker crash

A private Mosquitto + Kafka; one gateway; a simulated fleet of 3 devices at
10 readings/s each. Kafka is stopped, so the gateway stops acknowledging; past
its in-flight window (``--receive-maximum``, 20 here: the production default,
1,000, would hold a 10 s backlog in the gateway's memory, which survives a
broker restart) the broker queues the devices' readings in the gateway's
persistent session
(the devices have their PUBACK: for them the readings are delivered). Mosquitto
is then restarted (SIGTERM: it saves its persistence file; with ``--kill``,
SIGKILL: a crash, no final save), Kafka started
again, the fleet stopped (each agent flushes its outbox), and every seq the
agents allocated is looked up in the Kafka topic. Run once with the gateway on
a shared subscription (``share_group = "gateways"``) and once on a plain one
(``share_group = ""``). Prints one JSON line per mode.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from deploy.local.stack import LocalStack, free_port  # noqa: E402
from telemetry_contract import kafka_topics  # noqa: E402
from thermowatch import accounting as acc  # noqa: E402
from thermowatch.demo import DemoRun, pipeline_services, wait_topics  # noqa: E402
from thermowatch.demo_fleet import DemoFleet, steady_plan  # noqa: E402

SITES = {"s1": ["s1-d01", "s1-d02"], "s2": ["s2-d01"]}


def run_mode(
    share_group: str, backlog_s: float, work: Path, kill: bool, receive_maximum: int
) -> dict[str, object]:
    stack = LocalStack(
        stack_dir=work / f"stack-{share_group or 'plain'}",
        mqtt_port=free_port(),
        kafka_port=free_port(span=1),
    )
    stack.up(["mosquitto", "kafka"], timeout=240.0)
    run = DemoRun(
        run_id=f"restart{uuid.uuid4().hex[:6]}",
        run_dir=work / f"run-{share_group or 'plain'}",
        w1_dir=work / f"w1-{share_group or 'plain'}",
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
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            keys = asyncio.run(acc.fetch_reading_keys(bootstrap, topics.telemetry))
            if {d for d, _ in keys} == set(run.devices):
                break
            time.sleep(2)
        in_kafka = asyncio.run(acc.fetch_reading_keys(bootstrap, topics.telemetry))
        stack.stop("kafka")
        time.sleep(backlog_s)  # readings pile up in the gateway's session
        paths = fleet.outbox_paths()
        outboxes = {d: paths[d] for d in run.devices}
        # Acknowledged by the broker (gone from the outbox, or its row not yet
        # deleted: acked rows are deleted in batches, so this is a lower bound)
        # and not in Kafka before it stopped: held by the broker for the gateway.
        at_restart = acc.allocated_from_outboxes(outboxes)
        still_pending = acc.pending_in_outboxes(outboxes)
        held = sum(
            1
            for d, seqs in at_restart.items()
            for s in seqs
            if s not in still_pending[d] and (d, s) not in in_kafka
        )
        if kill:
            stack.kill("mosquitto")  # SIGKILL: no final persistence save
        else:
            stack.stop("mosquitto")  # SIGTERM: Mosquitto saves its persistence file
        time.sleep(1.0)
        stack.start("mosquitto", timeout=120.0)
        stack.start("kafka", timeout=240.0)
        time.sleep(15.0)
        fleet.stop()
        allocated = acc.allocated_from_outboxes(outboxes)
        pending = acc.pending_in_outboxes(outboxes)
        missing: list[tuple[str, int]] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            keys = asyncio.run(acc.fetch_reading_keys(bootstrap, topics.telemetry))
            missing = [(d, s) for d, seqs in allocated.items() for s in seqs if (d, s) not in keys]
            if not missing:
                break
            time.sleep(5)
        return {
            "share_group": share_group,
            "broker_stopped_by": "SIGKILL" if kill else "SIGTERM",
            "backlog_s": backlog_s,
            "receive_maximum": receive_maximum,
            "allocated": sum(len(r) for r in allocated.values()),
            "held_by_broker_at_restart": held,
            "missing": len(missing),
            "missing_first": missing[:10],
            "left_in_outboxes": sum(len(s) for s in pending.values()),
            "gateway_alive": gateway.alive,
        }
    finally:
        fleet.stop()
        gateway.stop()
        stack.down()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="shared,plain", help="comma list of shared, plain")
    ap.add_argument("--backlog-s", type=float, default=10.0, help="seconds Kafka is down first")
    ap.add_argument(
        "--kill", action="store_true", help="stop Mosquitto with SIGKILL instead of SIGTERM"
    )
    ap.add_argument(
        "--receive-maximum",
        type=int,
        default=20,
        help="the gateway's MQTT in-flight window (default 20, so that most of the "
        "backlog waits in the broker, not in the gateway's memory)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tw-restart-") as tmp:
        for mode in args.modes.split(","):
            group = {"shared": "gateways", "plain": ""}[mode.strip()]
            print(
                json.dumps(
                    run_mode(group, args.backlog_s, Path(tmp), args.kill, args.receive_maximum)
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()

"""Experiment (not a test): what a broker restart loses while the gateway is behind.

    python benchmarks/gateway/broker_restart_backlog.py                 # shared and plain
    python benchmarks/gateway/broker_restart_backlog.py --modes shared --backlog 20000
    python benchmarks/gateway/broker_restart_backlog.py --kill          # broker crash
    python benchmarks/gateway/broker_restart_backlog.py --kill --wipe   # ... and its disk lost
    python benchmarks/gateway/broker_restart_backlog.py --kill --no-receipts --modes plain \
        --broker artemis                                                # the durable broker

A private Mosquitto + Kafka; one gateway (``--gateways`` for more, sharing
the subscription); the demo's simulated fleet of 30 devices at 10 readings/s
each. Kafka is killed, so the gateway stops acknowledging; past its in-flight
window (``--receive-maximum``, 20 here: the production default, 1,000, would
hold the backlog in the gateway's memory, which survives a broker restart) the
broker queues the devices' readings in the gateway's persistent session until
it holds ``--backlog`` of them (counted by an observer subscribed beside the
gateway). Mosquitto is then restarted (SIGTERM: it saves its persistence
file; with ``--kill``, SIGKILL: a crash, no final save; with ``--wipe`` its
persistence file is deleted before the restart), Kafka started again, and
once the accounting is stable every seq the agents allocated is looked up in
the Kafka topic: a missing one is late (still in its outbox) or lost.
``--no-receipts``: the edges delete a reading at the broker's PUBACK (as before
receipts), so what the broker loses is lost; ``--broker artemis``: the optional
Artemis broker (it syncs its journal before each PUBACK) instead. Run once
with the gateway on a shared subscription (``share_group = "gateways"``) and
once on a plain one (``share_group = ""``). Prints one JSON line per mode.
The sequence itself is :func:`testsupport.broker_backlog.restart_with_backlog`,
which tests/chaos/test_chaos_broker_backlog.py runs (with the processor and
the search server) in ``make test``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the checkout's testsupport (not installed)

from deploy.local.stack import LocalStack, free_port  # noqa: E402
from testsupport.broker_backlog import BrokerFault, restart_with_backlog  # noqa: E402


def run_mode(
    share_group: str, fault: BrokerFault, work: Path, receive_maximum: int
) -> dict[str, object]:
    """One private stack, one backlog, one stop of the broker: the result as a dict."""
    name = share_group or "plain"
    stack = LocalStack(
        stack_dir=work / f"stack-{name}",
        mqtt_port=free_port(span=2),
        kafka_port=free_port(span=1),
        ports={"artemis": free_port(span=2)},
    )
    stack.up([fault.broker, "kafka"], timeout=240.0)
    try:
        got = restart_with_backlog(
            stack,
            work / name,
            dataclasses.replace(fault, share_group=share_group),
            receive_maximum=receive_maximum,
        )
    finally:
        stack.down()
    return {
        "broker": fault.broker,
        "receipts": fault.receipts,
        "share_group": share_group,
        "gateways": fault.gateways,
        "broker_stopped_by": "SIGKILL" if fault.kill else "SIGTERM",
        "persistence_wiped": fault.wipe,
        "receive_maximum": receive_maximum,
        "allocated": got.allocated,
        "held_by_broker_at_restart": got.held,
        "lost": len(got.final.lost),
        "lost_first": got.final.lost[:10],
        "late": len(got.final.late),
        "copies_in_kafka": got.kafka_copies,
        "left_in_outboxes": got.left_in_outboxes,
        "services_alive": got.services_alive,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="shared,plain", help="comma list of shared, plain")
    ap.add_argument(
        "--backlog", type=int, default=5000, help="readings the broker holds at the stop"
    )
    ap.add_argument(
        "--kill", action="store_true", help="stop the broker with SIGKILL instead of SIGTERM"
    )
    ap.add_argument(
        "--wipe", action="store_true", help="delete the broker's persistence file before restart"
    )
    ap.add_argument("--gateways", type=int, default=1, help="gateways (sharing when shared)")
    ap.add_argument("--broker", choices=("mosquitto", "artemis"), default="mosquitto")
    ap.add_argument(
        "--no-receipts",
        action="store_true",
        help="the edges delete a reading at the broker's PUBACK (the gateway sends no receipts)",
    )
    ap.add_argument(
        "--receive-maximum",
        type=int,
        default=20,
        help="the gateway's MQTT in-flight window (default 20, so that most of the "
        "backlog waits in the broker, not in the gateway's memory)",
    )
    args = ap.parse_args()
    fault = BrokerFault(
        kill=args.kill,
        wipe=args.wipe,
        gateways=args.gateways,
        backlog=args.backlog,
        broker=args.broker,
        receipts=not args.no_receipts,
    )
    with tempfile.TemporaryDirectory(prefix="tw-restart-") as tmp:
        for mode in args.modes.split(","):
            group = {"shared": "gateways", "plain": ""}[mode.strip()]
            result = run_mode(group, fault, Path(tmp), args.receive_maximum)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

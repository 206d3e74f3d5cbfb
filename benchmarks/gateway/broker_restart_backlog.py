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
(``share_group = ""``). Prints one JSON line per mode. The sequence itself is
:func:`testsupport.broker_backlog.restart_with_backlog`, which
tests/chaos/test_chaos_broker_backlog.py runs for the shared SIGTERM and
SIGKILL cases in ``make test``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the checkout's testsupport (not installed)

from deploy.local.stack import LocalStack, free_port  # noqa: E402
from testsupport.broker_backlog import restart_with_backlog  # noqa: E402


def run_mode(
    share_group: str, backlog_s: float, work: Path, kill: bool, receive_maximum: int
) -> dict[str, object]:
    """One private stack, one backlog, one stop of the broker: the result as a dict."""
    name = share_group or "plain"
    stack = LocalStack(
        stack_dir=work / f"stack-{name}", mqtt_port=free_port(), kafka_port=free_port(span=1)
    )
    stack.up(["mosquitto", "kafka"], timeout=240.0)
    try:
        got = restart_with_backlog(
            stack,
            work / name,
            share_group=share_group,
            backlog_s=backlog_s,
            kill=kill,
            receive_maximum=receive_maximum,
        )
    finally:
        stack.down()
    return {
        "share_group": share_group,
        "broker_stopped_by": "SIGKILL" if kill else "SIGTERM",
        "backlog_s": backlog_s,
        "receive_maximum": receive_maximum,
        "allocated": got.allocated,
        "held_by_broker_at_restart": got.held,
        "missing": len(got.missing),
        "missing_first": got.missing[:10],
        "left_in_outboxes": got.left_in_outboxes,
        "gateway_alive": got.gateway_alive,
    }


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

"""``thermowatch stack up|down|status|logs``: the local stack from the command line.

``thermowatch/cli.py`` calls :func:`register` with its sub-parsers;
each handler returns the exit code: 0 on success, 1 on an error, 3 from
``status`` when some service is down.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from deploy.local.services.kafka import KAFKA_USERS, Kafka
from deploy.local.stack import (
    DEFAULT_HEALTH_TIMEOUT,
    OPTIONAL_SERVICES,
    SERVICES,
    LocalStack,
    StackError,
)

__all__ = ["EXIT_SOME_DOWN", "register"]

EXIT_SOME_DOWN = 3
_CHOICES = (*SERVICES, *OPTIONAL_SERVICES)
_OPTIONAL_HELP = f"; optional, only when named: {', '.join(OPTIONAL_SERVICES)}"


def register(subparsers: Any) -> None:
    """Add the ``stack`` sub-command to an argparse ``add_subparsers()`` object."""
    stack = subparsers.add_parser(
        "stack",
        help="run the local Mosquitto/Kafka/OpenSearch stack as plain processes",
        description="Run the local stack (Mosquitto, Kafka KRaft, OpenSearch) as plain "
        "processes on 127.0.0.1. State lives in $THERMOWATCH_STACK_DIR "
        "(default ~/.local/state/thermowatch/stack), jars in $THERMOWATCH_CACHE_DIR "
        "(default ~/.cache/thermowatch). See deploy/local/README.md.",
    )
    stack.set_defaults(func=_usage(stack))
    actions = stack.add_subparsers(dest="stack_action", metavar="ACTION")

    up = actions.add_parser("up", help="install what is missing, start, wait until healthy")
    up.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help=f"any of {', '.join(SERVICES)} (default: these){_OPTIONAL_HELP}",
    )
    up.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_HEALTH_TIMEOUT,
        help="seconds to wait for each health check (default: %(default)s)",
    )
    up.add_argument(
        "--cluster",
        action="store_true",
        help="the cluster profile: 3 Kafka brokers (KRaft, 3 replicas, min.insync.replicas=2) "
        "and a 3-node search cluster (1 replica per shard) instead of one node each; "
        "kept until `stack down` (see deploy/local/README.md)",
    )
    up.set_defaults(func=_up)

    down = actions.add_parser("down", help="stop (SIGTERM, then SIGKILL after a timeout)")
    down.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help=f"any of {', '.join(_CHOICES)} (default: all that run)",
    )
    down.add_argument(
        "--timeout", type=float, default=45.0, help="seconds before SIGKILL (default: %(default)s)"
    )
    down.set_defaults(func=_down)

    status = actions.add_parser("status", help="state, address and pid of each service")
    status.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help=f"any of {', '.join(_CHOICES)} (default: {', '.join(SERVICES)}; "
        "the text output also lists the optional ones)",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_status)

    logs = actions.add_parser("logs", help="tail of the service logs")
    logs.add_argument(
        "service",
        nargs="?",
        choices=_CHOICES,
        metavar="SERVICE",
        help=f"one of {', '.join(_CHOICES)} (default: {', '.join(SERVICES)})",
    )
    logs.add_argument("-n", "--lines", type=int, default=50, help="lines (default: 50)")
    logs.add_argument(
        "--node", type=int, default=None, help="one node of a clustered service (default: all)"
    )
    logs.set_defaults(func=_logs)

    rotate = actions.add_parser(
        "kafka-rotate",
        help="give a Kafka (SCRAM) user a new password, on the broker and in kafka-secrets.json",
    )
    rotate.add_argument("user", choices=KAFKA_USERS, metavar="USER", help=", ".join(KAFKA_USERS))
    rotate.set_defaults(func=_kafka_rotate)


def _usage(parser: argparse.ArgumentParser) -> Any:
    def handler(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 1

    return handler


def _error(message: str) -> int:
    print(f"thermowatch stack: error: {message}", file=sys.stderr)
    return 1


def _up(args: argparse.Namespace) -> int:
    # Without --cluster: the profile the stack runs now (a running cluster stays one).
    stack = LocalStack(cluster=True if args.cluster else None)
    started = time.monotonic()
    try:
        result = stack.up(args.services or None, timeout=args.timeout)
    except StackError as exc:
        return _error(str(exc))
    status = stack.status(result)
    for name, what in result.items():
        entry = status[name]
        for node in entry.get("nodes") or [entry]:
            label = f"{name}-{node['id']}" if "id" in node else name
            print(f"{label:<13} {what:<8} {node['host']}:{node['port']}  pid {node['pid']}")
    took = time.monotonic() - started
    print(f"up in {took:.1f}s ({stack.profile} profile, stack dir {stack.root})")
    return 0


def _down(args: argparse.Namespace) -> int:
    stack = LocalStack()
    started = time.monotonic()
    try:
        result = stack.down(args.services or None, timeout=args.timeout)
    except StackError as exc:
        return _error(str(exc))
    for name, what in result.items():
        print(f"{name:<13} {what}")
    print(f"down in {time.monotonic() - started:.1f}s")
    return 0


def _status(args: argparse.Namespace) -> int:
    stack = LocalStack()
    try:
        status = stack.status(args.services or None)
    except StackError as exc:
        return _error(str(exc))
    # The exit code is about the services asked for (the default ones), never
    # about an optional service that was not asked for.
    all_up = all(
        node["pid"] is not None
        for entry in status.values()
        for node in entry.get("nodes") or [entry]
    )
    if args.json:
        print(json.dumps(status))
    else:
        if not args.services:
            status.update(stack.status(OPTIONAL_SERVICES))
        for name, entry in status.items():
            for node in entry.get("nodes") or [entry]:
                label = f"{name}-{node['id']}" if "id" in node else name
                if node["pid"] is None:
                    state = "off" if name in OPTIONAL_SERVICES and not args.services else "down"
                else:
                    healthy = stack.is_healthy(name, node=node.get("id"))
                    state = "up" if healthy else "unhealthy"
                address = f"{node['host']}:{node['port']}"
                if "id" not in node and entry.get("url"):
                    address = entry["url"]
                pid = node["pid"] if node["pid"] is not None else "-"
                print(f"{label:<13} {state:<9} {address:<24} pid {pid}")
    return 0 if all_up else EXIT_SOME_DOWN


def _kafka_rotate(args: argparse.Namespace) -> int:
    stack = LocalStack()
    try:
        kafka = stack.service("kafka")
        assert isinstance(kafka, Kafka)
        kafka.rotate(args.user)
    except StackError as exc:
        return _error(str(exc))
    print(
        f"kafka user {args.user}: new password in {kafka.secrets_file}; "
        "restart the stages that use it with their config updated"
    )
    return 0


def _logs(args: argparse.Namespace) -> int:
    stack = LocalStack()
    names = [args.service] if args.service else list(SERVICES)
    try:
        nodes = [
            (name, svc.node)
            for name in names
            for svc in stack.nodes(name)
            if args.node is None or svc.node == args.node
        ]
        if args.node is not None:
            stack.node(names[0], args.node)  # a clear error for a node that is not there
    except StackError as exc:
        return _error(str(exc))
    for name, node in nodes:
        if len(nodes) > 1:
            print(f"==> {stack.log_file(name, node)} <==")
        for line in stack.log_tail(name, args.lines, node=node):
            print(line)
    return 0

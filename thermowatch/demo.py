"""``thermowatch demo``: the main job, one command.

Today it brings the local stack up (installing what is missing), proves each
service with a real round trip (see :mod:`thermowatch.smoke`), prints what it
found and leaves the stack running for exploration; ``thermowatch stack down``
(``make demo-down``) stops it. The full pipeline demo on a simulated fleet
builds on this as the stages land.
"""

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["register"]


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``demo`` command."""
    p = sub.add_parser("demo", help="bring the stack up and run the demo (the main job)")
    p.add_argument("--summary", type=Path, help="also write the summary as JSON to this file")
    p.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the stack (default 600)"
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import logging

    from rich.console import Console
    from rich.table import Table

    from deploy.local.stack import LocalStack
    from thermowatch.smoke import run_all

    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    console = Console(stderr=False)
    stack = LocalStack()
    t0 = time.monotonic()
    with console.status("bringing the local stack up (first run downloads Kafka and OpenSearch)"):
        stack.up(timeout=args.timeout)
    up_s = time.monotonic() - t0
    endpoints = stack.endpoints()
    probes = run_all(endpoints)

    table = Table(title=f"thermowatch local stack (up in {up_s:.1f} s)")
    for col in ("service", "address", "check", "result", "time"):
        table.add_column(col)
    address = {
        "mosquitto": f"mqtt://{endpoints['mosquitto']['host']}:{endpoints['mosquitto']['port']}",
        "kafka": endpoints["kafka"]["bootstrap"],
        "search": endpoints["search"]["url"],
    }
    for p in probes:
        table.add_row(
            p.service,
            address[p.service],
            p.detail,
            "[green]ok[/green]" if p.ok else "[red]FAILED[/red]",
            f"{p.seconds:.2f} s",
        )
    console.print(table)
    console.print(
        "The stack is left running: [bold]thermowatch stack status[/bold]; "
        "stop it with [bold]make demo-down[/bold] (thermowatch stack down)."
    )
    summary = {
        "stack_up_seconds": round(up_s, 2),
        "services": {
            p.service: {"ok": p.ok, "detail": p.detail, "seconds": round(p.seconds, 3)}
            for p in probes
        },
        "endpoints": {
            k: {kk: vv for kk, vv in v.items() if kk != "users"} for k, v in endpoints.items()
        },
    }
    if args.summary:
        args.summary.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    ok = all(p.ok for p in probes)
    if not ok:
        print("thermowatch: error: a service failed its check (see above)", file=sys.stderr)
    return 0 if ok else 1

"""``thermowatch demo``: the main job, one command (``make demo``).

1. Brings the local stack up (installing what is missing) and proves each
   service with a real round trip (:mod:`thermowatch.smoke`). With
   ``--search elasticsearch`` the search server is the stack's optional
   Elasticsearch 8 service (the one Kibana can read) instead of OpenSearch.
2. Writes gateway and processor configs into a run directory
   (``<stack dir>/demo/<run id>/``; its own Kafka topic prefix, consumer group,
   index prefix, MQTT share group) and starts both as subprocesses (logs in
   ``logs/``).
3. Runs a simulated fleet, 3 sites x 10 devices at 1 Hz, through scripted
   incidents (:mod:`thermowatch.demo.scenario`): a freezer door left open, a
   fire-like rise, a stuck probe, an agent killed (last will: offline) and
   started again, a burst of malformed payloads published straight to MQTT.
   A live view (rich) shows readings stored per second (search server),
   consumer lag (Kafka) and the open alerts.
4. Stops the fleet, waits until the pipeline is drained, stops gateway and
   processor, and counts everything from where it really is
   (:mod:`thermowatch.accounting`): readings per (device, seq) in the search
   server against the seqs the edge outboxes allocated, Gaps from Kafka,
   alerts from the alerts index, malformed payloads from the dead-letter topic.
   Prints the summary (and writes it with ``--summary``); exits 1 if a
   reading was lost or stored twice, or if the alerts broke their promise
   (:func:`~thermowatch.demo.account.alert_problems`: an incident missed, a
   false alert, more than 3 notifications for one incident, a critical alert
   after the announced shutdown).

The stack stays up; ``make demo-down`` (``thermowatch stack down``) stops it.
``thermowatch demo account --run-dir DIR`` repeats the accounting of a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from stagekit.stage import SubParsers

__all__ = ["register"]


def register(sub: SubParsers[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` command (and ``demo account``, ``demo clean``)."""
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on a simulated fleet (the main job)",
        description=__doc__,
    )
    p.add_argument("--duration", type=float, default=150.0, help="seconds of fleet (default 150)")
    p.add_argument("--summary", type=Path, help="also write the summary as JSON to this file")
    p.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the stack (default 600)"
    )
    p.add_argument("--no-live", action="store_true", help="plain log lines instead of a live view")
    p.add_argument("--no-web", action="store_true", help="do not serve the run's web view")
    p.add_argument(
        "--web-port", type=int, default=0, help="port of the run's web view (default: a free one)"
    )
    p.add_argument(
        "--search",
        choices=("opensearch", "elasticsearch"),
        default="opensearch",
        help="search server to store in: the stack's OpenSearch 2 (default) or its optional "
        "Elasticsearch 8 service, the one Kibana reads (started when missing)",
    )
    p.set_defaults(func=_run)
    dsub = p.add_subparsers(title="demo commands", metavar="DEMO_COMMAND")
    a = dsub.add_parser("account", help="count a finished run again (readings, alerts)")
    a.add_argument("--run-dir", type=Path, required=True, help="<stack dir>/demo/<run id>")
    a.add_argument("--summary", type=Path, help="also write the summary as JSON to this file")
    a.set_defaults(func=_account)
    c = dsub.add_parser(
        "clean", help="remove older demo runs' Kafka topics, indices, templates and files"
    )
    c.add_argument(
        "--keep", type=int, default=0, help="newest runs to keep (default 0: remove all)"
    )
    c.set_defaults(func=_clean)


def _quiet_libraries() -> None:
    """Keep the terminal for the demo: no line per request or per topic created."""
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("stagekit.kafka").setLevel(logging.WARNING)
    # The search clients log every request at INFO and every refusal at WARNING
    # (the smoke probe's duplicate create is refused on purpose); failures raise.
    logging.getLogger("opensearch").setLevel(logging.ERROR)
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)


def _clean(args: argparse.Namespace) -> int:
    from deploy.local.stack import LocalStack
    from thermowatch.demo.clean import clean_demo_runs

    if args.keep < 0:
        print(f"thermowatch: error: --keep: must be 0 or more, got {args.keep}", file=sys.stderr)
        return 2
    _quiet_libraries()
    stack = LocalStack()
    report = clean_demo_runs(stack.root, stack.endpoints(), keep=args.keep)
    print(
        f"removed {len(report.runs)} run(s): {len(report.topics)} topics, "
        f"{len(report.indices)} indices, {len(report.templates)} templates, "
        f"{len(report.dirs)} directories"
    )
    for err in report.errors:
        print(f"thermowatch: error: {err} (left for the next clean)", file=sys.stderr)
    return 1 if report.errors else 0


def _finish(console: Any, summary: dict[str, Any], path: Path | None) -> int:
    from thermowatch.demo.report import print_summary

    print_summary(console, summary)
    if path:
        path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    failed = False
    if not summary["ok"]:
        print(
            "thermowatch: error: readings lost or stored twice (or malformed stored): see above",
            file=sys.stderr,
        )
        failed = True
    for problem in summary.get("alert_problems", []):
        print(f"thermowatch: error: alerts: {problem}", file=sys.stderr)
        failed = True
    return 1 if failed else 0


def _account(args: argparse.Namespace) -> int:
    from rich.console import Console

    from deploy.local.stack import LocalStack
    from thermowatch.demo.account import account_run
    from thermowatch.demo.run import DemoRun

    _quiet_libraries()
    run = DemoRun.load(args.run_dir)
    summary = asyncio.run(account_run(run, LocalStack().endpoints()))
    return _finish(Console(), summary, args.summary)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from deploy.local.services import SERVICES, search_service
    from deploy.local.stack import LocalStack
    from thermowatch.demo.clean import clean_demo_runs
    from thermowatch.demo.live import route_logs
    from thermowatch.demo.pipeline import run_pipeline_demo
    from thermowatch.demo.report import print_next_steps, print_probes
    from thermowatch.demo.run import demo_sites, new_run
    from thermowatch.demo.web import hold_web, serve_web
    from thermowatch.smoke import run_all

    if not 0 <= args.web_port <= 65535:
        print(
            f"thermowatch: error: --web-port: must be 0..65535, got {args.web_port}",
            file=sys.stderr,
        )
        return 2
    # SIGTERM stops the demo as Ctrl-C does: services, fleet and web view included.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # Log lines are printed above the status spinner and the live view, never into them.
    route_logs(console_level=logging.getLogger().getEffectiveLevel())
    _quiet_libraries()
    # 30 agents log every start and stop: keep the terminal for the live view.
    logging.getLogger("edge_agent").setLevel(logging.WARNING)
    console = Console()
    stack = LocalStack()
    t0 = time.monotonic()
    # The default services, or with --search elasticsearch the optional
    # Elasticsearch service in place of OpenSearch.
    server = search_service(args.search)
    services = [s for s in SERVICES if s != "search"] + [server]
    downloads = "OpenSearch" if args.search == "opensearch" else "Elasticsearch"
    with console.status(f"bringing the local stack up (first run downloads Kafka and {downloads})"):
        stack.up(services, timeout=args.timeout)
    up_s = time.monotonic() - t0
    endpoints = stack.endpoints()
    probes = run_all(endpoints, search_backend=args.search)
    print_probes(console, probes, endpoints, up_s, search_service=server)
    if not all(p.ok for p in probes):
        print("thermowatch: error: a service failed its check (see above)", file=sys.stderr)
        return 1
    # Earlier runs' topics, indices and files: keep the newest one to compare with.
    cleaned = clean_demo_runs(stack.root, endpoints, keep=1)
    if cleaned.runs:
        console.print(
            f"Removed {len(cleaned.runs)} older demo run(s): {len(cleaned.topics)} topics, "
            f"{len(cleaned.indices)} indices"
            + (f" ({'; '.join(cleaned.errors)})" if cleaned.errors else "")
        )
    run = new_run(stack.root, demo_sites(), args.duration, search_backend=args.search)
    # From here every log line goes to the run's logs/demo.log; warnings also to the terminal.
    route_logs(run.run_dir / "logs" / "demo.log")
    web = serve_web(console, run, endpoints, port=args.web_port, enabled=not args.no_web)
    live = not args.no_live and console.is_terminal
    summary = asyncio.run(run_pipeline_demo(run, endpoints, live=live, console=console))
    summary["stack_up_seconds"] = round(up_s, 2)
    summary["smoke"] = {p.service: {"ok": p.ok, "seconds": round(p.seconds, 3)} for p in probes}
    code = _finish(console, summary, args.summary)
    print_next_steps(console, run)
    if web is not None:
        hold_web(console, web)
    return code

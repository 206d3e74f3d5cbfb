"""What ``thermowatch demo`` prints around the live view: the stack's checks, the summary.

Plain functions of their data, printed with rich (imported when printing).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from thermowatch.demo.run import DemoRun
from thermowatch.smoke import Probe

__all__ = [
    "MEASURES",
    "command_name",
    "next_steps",
    "print_next_steps",
    "print_probes",
    "print_summary",
]


#: The counts of the summary table, in order.
MEASURES = (
    "readings_sent", "readings_stored", "readings_lost", "readings_duplicated",
    "readings_covered_by_gap", "readings_unexpected", "incidents_injected",
    "incidents_alerted", "incidents_missed", "false_alerts", "notifications_per_incident",
    "malformed_sent",
    "malformed_dead_lettered", "malformed_stored",
)  # fmt: skip


def print_probes(
    console: Any,
    probes: Sequence[Probe],
    endpoints: Mapping[str, Any],
    up_s: float,
    *,
    search_service: str = "search",
) -> None:
    """One row per service check of the stack (``search_service``: the search server's)."""
    from rich.table import Table

    table = Table(title=f"thermowatch local stack (up in {up_s:.1f} s)")
    for col in ("service", "address", "check", "result", "time"):
        table.add_column(col)
    address = {
        "mosquitto": "{}://{}:{}".format(
            "mqtts" if endpoints["mosquitto"].get("tls") else "mqtt",
            endpoints["mosquitto"]["host"],
            endpoints["mosquitto"]["port"],
        ),
        "kafka": endpoints["kafka"]["bootstrap"],
        "search": endpoints[search_service]["url"],
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


def print_summary(console: Any, summary: Mapping[str, Any]) -> None:
    """The summary as two tables: the counts, then one row per incident."""
    from rich.table import Table

    t = Table(title=f"demo summary ({summary['run_id']})")
    t.add_column("measure")
    t.add_column("value", justify="right")
    for k in MEASURES:
        t.add_row(k, str(summary[k]))
    for q, v in summary["alert_latency_ms"].items():
        t.add_row(f"alert_latency_ms {q}", "-" if v is None else f"{v:,}")
    console.print(t)
    inc = Table(title="incidents")
    for col in ("kind", "device", "alerted", "latency ms", "notified o/e/r", "rules"):
        inc.add_column(col, no_wrap=col in ("kind", "device"))
    notified = summary.get("notifications") or [None] * len(summary["incidents"])
    for i, n in zip(summary["incidents"], notified, strict=True):
        inc.add_row(
            i["kind"],
            i["device_id"],
            "[green]yes[/green]" if i["alerted"] else "[red]missed[/red]",
            "-" if i["latency_ms"] is None else str(i["latency_ms"]),
            "-" if n is None else f"{n['opened']}/{n['escalated']}/{n['resolved']}",
            ", ".join(i["rules"]),
        )
    console.print(inc)


def command_name(argv0: str | None = None, path: str | None = None) -> str:
    """How the user runs ``thermowatch`` again from here: the name alone when the
    shell finds this same program on ``PATH``, else its path (``.venv/bin/thermowatch``
    after ``make demo`` with an externally managed python3), else ``python -m``.

    >>> command_name("/nowhere/bin/thermowatch", path="")
    '/nowhere/bin/thermowatch'
    >>> command_name("/nowhere/thermowatch/__main__.py", path="").endswith(" -m thermowatch")
    True
    """
    exe = Path(argv0 if argv0 is not None else sys.argv[0])
    if exe.name != "thermowatch":
        return f"{sys.executable} -m thermowatch"
    found = shutil.which("thermowatch", path=path)
    if found is not None and Path(found).resolve() == exe.resolve():
        return "thermowatch"
    try:
        relative = exe.resolve().relative_to(Path.cwd())
    except ValueError:
        return str(exe.resolve())
    return str(relative) if os.sep in str(relative) else f".{os.sep}{relative}"


def next_steps(run: DemoRun, command: str | None = None) -> list[tuple[str, str]]:
    """What to do next, as (what, command or place): one line each.

    Kibana reads only Elasticsearch: a run on OpenSearch points to the run that
    Kibana can show instead of an import it would refuse.
    """
    tw = command if command is not None else command_name()
    if run.search_backend == "elasticsearch":
        dashboards = f"{tw} kibana import --url http://localhost:5601 --prefix {run.index_prefix}"
    else:
        dashboards = f"Kibana reads only Elasticsearch: {tw} demo --search elasticsearch"
    return [
        ("Logs and configs", str(run.run_dir)),
        ("Dashboards", dashboards),
        ("Count again", f"{tw} demo account --run-dir {run.run_dir}"),
        ("Web view again", f"{tw} web run -c {run.run_dir / 'web.toml'}"),
        ("Stop the stack (left running)", "make demo-down"),
    ]


def print_next_steps(console: Any, run: DemoRun) -> None:
    """Where the run's files are and what to do next (dashboards, recount, web view, stop).

    Each hint is one line however narrow the terminal: ``soft_wrap`` leaves the
    wrapping to the terminal, so a command copied from it has no line break.
    """
    from rich.text import Text

    for what, command in next_steps(run):
        line = Text(f"{what}: ")
        line.append(command, style="bold")
        console.print(line, soft_wrap=True)

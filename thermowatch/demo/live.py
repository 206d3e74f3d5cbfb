"""The demo's live terminal view: what is stored, how fast, the lag, the open alerts.

:class:`LiveState` is what the view shows, refreshed from the services by
:class:`Watchers` about once a second; :func:`render` turns it into rich
renderables (rich is imported when rendering, not at import). Without a
terminal (or with ``--no-live``) the script's events are printed as plain
lines instead.

Log lines never enter the frame: :func:`route_logs` sends every record to a
file in the run directory, and warnings to ``sys.stderr`` as it is when they
happen, which rich's live display redirects above its frame. The frame fits
80 columns: device ids are never cut, other columns give way, and the alert
list is capped (``… and N more``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from thermowatch.demo.monitor import KafkaLag, OpenAlert, SearchWatch, rate
from thermowatch.demo.run import DemoRun

__all__ = ["MAX_ALERT_ROWS", "LiveState", "StderrNow", "Watchers", "render", "route_logs"]

log = logging.getLogger(__name__)

#: Open alerts listed in the frame; the rest are counted in one ``… and N more`` row.
MAX_ALERT_ROWS: Final = 8
#: Open alerts fetched per refresh (so ``N more`` is exact up to this many).
_ALERTS_FETCHED: Final = 200
_LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StderrNow(logging.Handler):
    """Writes each line to ``sys.stderr`` as it is at that moment.

    A plain :class:`logging.StreamHandler` keeps the stream it was created
    with, so its lines are written straight through rich's live frame and glue
    onto it; rich redirects ``sys.stderr`` while a live display (or a status
    spinner) runs and prints what is written there above the frame.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # logging must not end the demo
            self.handleError(record)


def route_logs(log_file: Path | None = None, *, console_level: int = logging.WARNING) -> None:
    """Send the process's log records to ``log_file`` (every level the root logger lets
    through) and to :class:`StderrNow` (``console_level`` and up), replacing the
    root logger's stream handlers. Called again, it replaces what it set before."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_thermowatch_demo", False) or type(h) is logging.StreamHandler:
            root.removeHandler(h)
            if isinstance(h, logging.FileHandler):
                h.close()
    handlers: list[logging.Handler] = [StderrNow(console_level)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for h in handlers:
        h.setFormatter(logging.Formatter(_LOG_FORMAT))
        h._thermowatch_demo = True  # type: ignore[attr-defined]
        root.addHandler(h)


@dataclass
class LiveState:
    """What the live view shows (and the drain loop waits on)."""

    elapsed: float = 0.0
    stored: int = 0
    rate: float = 0.0
    lag: int = 0
    alerts: list[OpenAlert] = field(default_factory=list)
    #: The script as it happened: ``HH:MM:SS what``.
    events: list[str] = field(default_factory=list)
    samples: list[tuple[float, int]] = field(default_factory=list)

    def event(self, text: str, *, echo: Callable[[str], object] | None = None) -> None:
        """Note one step of the script (and print it when there is no live view)."""
        line = f"{time.strftime('%H:%M:%S')} {text}"
        self.events.append(line)
        log.info("event=demo_step detail=%r", text)
        if echo is not None:
            echo(line)


class Watchers:
    """The search server and Kafka as the live view sees them; refreshes a :class:`LiveState`."""

    def __init__(self, run: DemoRun, watch: SearchWatch, lag: KafkaLag) -> None:
        self.run = run
        self.watch = watch
        self.lag = lag

    async def refresh(self, state: LiveState) -> None:
        """Stored readings, rate, open alerts and lag; a failure is logged, not raised."""
        run = self.run
        try:
            stored = await asyncio.to_thread(self.watch.readings)
            state.samples.append((time.monotonic(), stored))
            state.stored, state.rate = stored, rate(state.samples)
            # The fleet's own clean shutdown sends "offline" for every device: not news.
            until = run.fleet_stopped_ms or None
            state.alerts = await asyncio.to_thread(
                self.watch.open_alerts, run.started_ms, until, _ALERTS_FETCHED
            )
            state.lag = await self.lag.lag()
        except Exception as exc:  # a view glitch must not end the demo
            log.warning("event=view_refresh_failed error=%r", exc)


def render(run: DemoRun, state: LiveState) -> Any:
    """The live view: two head lines, the last steps of the script, the open alerts.

    Fits 80 columns: the device column is as wide as the longest id shown and
    never wraps or shortens; the message column gives way first.
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text.from_markup(
        f"[bold]thermowatch demo[/bold] {run.run_id}  "
        f"t = {state.elapsed:.0f}/{run.duration_s:.0f} s\n"
        f"stored {state.stored:,} readings  [bold]{state.rate:.1f}[/bold] readings/s  "
        f"consumer lag [bold]{state.lag}[/bold]  open alerts [bold]{len(state.alerts)}[/bold]"
    )
    events = Table(title="script", show_header=False, box=None)
    events.add_column(overflow="ellipsis", no_wrap=True)
    for line in state.events[-6:]:
        events.add_row(line)
    shown = state.alerts[:MAX_ALERT_ROWS]
    id_width = max((len(a.device_id) for a in shown), default=6)
    alerts = Table(title="open alerts", expand=True)
    alerts.add_column("device", no_wrap=True, min_width=max(6, id_width))
    alerts.add_column("rule", no_wrap=True, overflow="ellipsis", max_width=16)
    alerts.add_column("severity", no_wrap=True, overflow="ellipsis", max_width=8)
    alerts.add_column("opened", no_wrap=True, min_width=8)
    alerts.add_column("message", no_wrap=True, overflow="ellipsis", ratio=1)
    for a in shown:
        opened = time.strftime("%H:%M:%S", time.localtime(a.opened_at / 1000))
        color = {"critical": "red", "warning": "yellow"}.get(a.severity, "cyan")
        alerts.add_row(a.device_id, a.rule, Text(a.severity, style=color), opened, Text(a.message))
    if len(state.alerts) > len(shown):
        alerts.caption = f"… and {len(state.alerts) - len(shown)} more"
    return Group(head, events, alerts)

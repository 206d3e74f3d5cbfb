"""The demo's live terminal view: what is stored, how fast, the lag, the open alerts.

:class:`LiveState` is what the view shows, refreshed from the services by
:class:`Watchers` about once a second; :func:`render` turns it into rich
renderables (rich is imported when rendering, not at import). Without a
terminal (or with ``--no-live``) the script's events are printed as plain
lines instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from thermowatch.demo.monitor import KafkaLag, OpenAlert, SearchWatch, rate
from thermowatch.demo.run import DemoRun

__all__ = ["LiveState", "Watchers", "render"]

log = logging.getLogger(__name__)


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
            state.alerts = await asyncio.to_thread(self.watch.open_alerts, run.started_ms, until)
            state.lag = await self.lag.lag()
        except Exception as exc:  # a view glitch must not end the demo
            log.warning("event=view_refresh_failed error=%r", exc)


def render(run: DemoRun, state: LiveState) -> Any:
    """The live view: a head line, the last steps of the script, the open alerts."""
    from rich.console import Group
    from rich.table import Table

    head = Table.grid(padding=(0, 2))
    head.add_row(
        f"[bold]thermowatch demo[/bold] {run.run_id}",
        f"t = {state.elapsed:.0f}/{run.duration_s:.0f} s",
        f"stored {state.stored:,} readings",
        f"[bold]{state.rate:.1f}[/bold] readings/s",
        f"consumer lag [bold]{state.lag}[/bold]",
    )
    events = Table(title="script", show_header=False, box=None)
    for line in state.events[-6:]:
        events.add_row(line)
    alerts = Table(title="open alerts", expand=True)
    for col in ("device", "rule", "severity", "opened", "message"):
        alerts.add_column(col, overflow="ellipsis", no_wrap=True)
    for a in state.alerts:
        opened = time.strftime("%H:%M:%S", time.localtime(a.opened_at / 1000))
        color = {"critical": "red", "warning": "yellow"}.get(a.severity, "cyan")
        alerts.add_row(a.device_id, a.rule, f"[{color}]{a.severity}[/{color}]", opened, a.message)
    return Group(head, events, alerts)

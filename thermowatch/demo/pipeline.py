"""One demo run, start to finish: services, fleet, script, drain, count.

:func:`run_pipeline_demo` writes the run's configs and starts the gateway
(it creates the run's Kafka topics) and then the processor, starts the
simulated fleet, plays the script (:mod:`thermowatch.demo.scenario`) while
the live view (:mod:`thermowatch.demo.live`) shows what is stored, stops the
fleet, waits until the pipeline is drained, stops both services and counts
the run (:mod:`thermowatch.demo.account`). The stack itself is the caller's
(``thermowatch demo`` brings it up first).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from deploy.local.config_keys import ensure_key_pair
from telemetry_contract import kafka_topics
from thermowatch.accounting import allocated_from_outboxes
from thermowatch.demo.account import account_run
from thermowatch.demo.fleet import DemoFleet
from thermowatch.demo.live import LiveState, Watchers, render
from thermowatch.demo.monitor import KafkaLag, SearchWatch
from thermowatch.demo.plan import plan
from thermowatch.demo.run import DemoRun, now_ms
from thermowatch.demo.scenario import ScenarioPlayer
from thermowatch.demo.services import Service, pipeline_services, wait_topics

__all__ = ["run_pipeline_demo"]

log = logging.getLogger(__name__)


async def run_pipeline_demo(
    run: DemoRun,
    endpoints: Mapping[str, Any],
    *,
    live: bool = True,
    console: Any = None,
    drain_timeout_s: float = 120.0,
    malformed_count: int = 24,
) -> dict[str, Any]:
    """Run the whole pipeline on the simulated fleet and return the summary (see module doc)."""
    from rich.console import Console

    console = console or Console()
    run.run_dir.mkdir(parents=True, exist_ok=True)
    kafka = run.kafka_settings(endpoints)
    topics = kafka_topics(run.kafka_prefix)
    services = pipeline_services(run, endpoints)
    fleet_plan = plan(run.sites, run.duration_s)
    fleet = DemoFleet(
        fleet_plan,
        run_dir=run.run_dir,
        w1_dir=run.w1_dir,
        mqtt=endpoints["mosquitto"],
        run_id=run.run_id,
        # The stack's config signing key (<stack>/demo/<run id> is the run dir).
        config_public_key=str(ensure_key_pair(run.run_dir.parents[1])[1]),
    )
    watchers = Watchers(
        run,
        SearchWatch(run.search_settings(endpoints), run.devices),
        KafkaLag(kafka, run.group_id, [topics.telemetry, topics.edge_alerts, topics.status]),
    )
    state = LiveState()
    note = functools.partial(state.event, echo=None if live else console.print)
    player = ScenarioPlayer(
        run, fleet, fleet_plan, endpoints["mosquitto"], note=note, malformed_count=malformed_count
    )
    fleet_started = False
    try:
        gateway, processor = services
        note(f"run dir {run.run_dir}")
        gateway.start()
        await wait_topics(kafka, topics.all(), gateway, 90.0)
        note(f"gateway up, Kafka topics {run.kafka_prefix}.*")
        processor.start()
        note(f"processor up, indices {run.index_prefix}*")
        await watchers.lag.start()
        run.started_ms = now_ms()
        await asyncio.to_thread(fleet.start)
        fleet_started = True
        t0 = time.monotonic()
        note(f"fleet of {len(run.devices)} agents started ({len(run.sites)} sites, 1 Hz)")
        player.begin()
        with _live_view(run, state, live, console) as show:
            await _play(run, state, player, watchers, services, show, t0)
            # Stop the fleet (agents flush their outboxes; the killed one replays first).
            run.fleet_stopped_ms = now_ms()
            await asyncio.to_thread(fleet.restart_offline_if_needed)
            note("stopping the fleet (each agent flushes its outbox)")
            await asyncio.to_thread(fleet.stop)
            fleet_started = False
            run.save()
            await _drain(state, watchers, fleet.outbox_paths(), show, note, drain_timeout_s)
    finally:
        if fleet_started:
            await asyncio.to_thread(fleet.stop)
        await watchers.lag.close()
        for svc in reversed(services):
            await asyncio.to_thread(svc.stop)
        watchers.watch.close()
        shutil.rmtree(run.w1_dir.parent, ignore_errors=True)
    summary = await account_run(run, endpoints, fleet.outbox_paths())
    summary["services"] = {
        f"{svc.name}_exit": svc.proc.returncode if svc.proc else None for svc in services
    }
    return summary


@contextlib.contextmanager
def _live_view(
    run: DemoRun, state: LiveState, live: bool, console: Any
) -> Iterator[Callable[[], None]]:
    """A function that redraws the live view (does nothing without one)."""
    if not live:
        yield lambda: None
        return
    from rich.live import Live

    with Live(render(run, state), console=console, refresh_per_second=2, transient=False) as lv:
        yield lambda: lv.update(render(run, state))


async def _play(
    run: DemoRun,
    state: LiveState,
    player: ScenarioPlayer,
    watchers: Watchers,
    services: Sequence[Service],
    show: Callable[[], None],
    t0: float,
) -> None:
    """Play the script until ``run.duration_s`` after ``t0`` (monotonic), refreshing the
    view about once a second."""
    while True:
        elapsed = time.monotonic() - t0
        state.elapsed = elapsed
        await player.play_due(elapsed)
        for svc in services:
            if not svc.alive:
                raise RuntimeError(f"{svc.name} exited:\n{svc.tail()}")
        await watchers.refresh(state)
        show()
        if elapsed >= run.duration_s:
            break
        await asyncio.sleep(max(0.0, min(1.0, run.duration_s - elapsed)))
    player.finish()


async def _drain(
    state: LiveState,
    watchers: Watchers,
    outboxes: Mapping[str, Path],
    show: Callable[[], None],
    note: Callable[[str], None],
    timeout_s: float,
) -> None:
    """Wait until every allocated seq is searchable and the lag is 0 (or ``timeout_s``)."""
    allocated = allocated_from_outboxes(outboxes)
    expected = sum(len(r) for r in allocated.values())
    note(f"fleet stopped: {expected} seqs allocated; draining the pipeline")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await watchers.refresh(state)
        state.stored = await asyncio.to_thread(watchers.watch.readings, refresh=True)
        show()
        if state.stored >= expected and state.lag == 0:
            break
        await asyncio.sleep(1.0)
    note(f"drained: {state.stored} stored, lag {state.lag}")

"""``thermowatch edge``: run the edge agent, inspect it, or simulate sensors.

Commands: ``run [--mock-gpio]`` (the service), ``check-config``, ``print-config``,
``once [--dry-run]`` (one sampling round), ``simulate --scenario FILE``
(fake w1 sysfs fleet, optionally with one agent per simulated device) and
``outbox`` (depth, oldest age, drops). Also ``python -m edge_agent ...``.
Heavy imports happen in the handlers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from stagekit.stage import StageCommand, SubParsers, add_config_commands

__all__ = ["COMMAND", "main", "register"]

log = logging.getLogger("edge_agent")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        default=os.environ.get("THERMOWATCH_EDGE_CONFIG"),
        help="TOML config file (default: $THERMOWATCH_EDGE_CONFIG, else built-in defaults)",
    )


def _add_mock_gpio(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mock-gpio",
        action="store_true",
        help="simulated GPIO pins (gpiozero's MockFactory), for a machine without GPIO: "
        "the relay, buzzer and LEDs switch nothing",
    )


def _pin_factory(args: argparse.Namespace) -> Any:
    from edge_agent.gpio import mock_pin_factory

    return mock_pin_factory() if args.mock_gpio else None


def _add_commands(sub: SubParsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the agent (systemd service)")
    _add_config(p)
    _add_mock_gpio(p)
    p.set_defaults(func=cmd_run)

    add_config_commands(sub, _load, _describe, config_option=_add_config, summary=_summary)

    p = sub.add_parser("once", help="one sampling round")
    _add_config(p)
    p.add_argument("--dry-run", action="store_true", help="read and print only: no outbox, no MQTT")
    _add_mock_gpio(p)
    p.set_defaults(func=cmd_once)

    p = sub.add_parser("simulate", help="simulate a fleet of DS18B20 probes (fake w1 sysfs)")
    p.add_argument("--scenario", required=True, help="scenario TOML file")
    p.add_argument("--out", default="sim-w1", help="directory for the fake trees and labels")
    p.add_argument("--fast", action="store_true", help="do not pace steps in real time")
    p.add_argument("--steps", type=int, default=None, help="stop after N steps")
    p.add_argument(
        "--agents",
        metavar="CONFIG",
        default=None,
        help="also run one agent per simulated device, from this config template",
    )
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("outbox", help="show outbox depth, oldest age, drops")
    _add_config(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_outbox)


#: ``thermowatch edge ...`` and ``python -m edge_agent ...``.
COMMAND = StageCommand(
    name="edge",
    help="edge agent (Raspberry Pi)",
    description=__doc__ or "",
    add_commands=_add_commands,
    module="edge_agent",
)


#: Adds the command to ``thermowatch``'s parser.
register = COMMAND.register
#: ``python -m ...``: the same sub-commands.
main = COMMAND.main


def _load(path: str | None) -> Any:
    from edge_agent.config import load_config

    return load_config(path)


def _describe(cfg: Any) -> str:
    m = cfg.mqtt
    return (
        f"edge agent {cfg.device.site}/{cfg.device.device_id}: mqtt {m.host}:{m.port} "
        f"(tls {'on' if m.tls else 'off'}), outbox {cfg.outbox_path}"
    )


def _summary(cfg: Any) -> dict[str, Any]:
    from edge_agent.config import config_summary

    return config_summary(cfg)


def _install_stop_handlers(stop: threading.Event) -> None:
    def handler(signum: int, _frame: Any) -> None:
        log.info("event=signal signal=%s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def cmd_run(args: argparse.Namespace) -> int:
    from edge_agent.app import EdgeAgent

    cfg = _load(args.config)
    agent = EdgeAgent(cfg, pin_factory=_pin_factory(args))
    stop = threading.Event()
    _install_stop_handlers(stop)
    try:
        agent.start()
        agent.run(stop)
    finally:
        agent.shutdown()
    return 0


def cmd_once(args: argparse.Namespace) -> int:
    from edge_agent.adapters import read_sensors_once
    from edge_agent.app import EdgeAgent

    cfg = _load(args.config)
    if args.dry_run:
        got = read_sensors_once(cfg)
        for x in got:
            print(
                json.dumps(
                    {
                        "sensor_id": x.sensor_id,
                        "ts": x.ts_ms,
                        "temp_c": x.temp_c,
                        "quality": x.quality.value,
                        "attempts": x.attempts,
                        "detail": x.detail,
                    }
                )
            )
        return 0 if got and all(x.ok for x in got) else 1
    agent = EdgeAgent(cfg, pin_factory=_pin_factory(args))
    try:
        agent.start()
        stored = agent.sample_once(cfg.sensors.read_timeout_s + 1)
        flushed = agent.flush(cfg.outbox.flush_timeout_s)
        print(f"stored={stored} flushed={flushed}")
    finally:
        agent.shutdown()
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    from edge_agent.outbox import Outbox

    cfg = _load(args.config)
    path = cfg.outbox_path
    if not path.exists():
        print(f"thermowatch: error: {path}: no outbox yet", file=sys.stderr)
        return 1
    with Outbox(path, device_id=cfg.device.device_id, site=cfg.device.site) as ob:
        st = ob.stats()
    data = {
        "path": str(path),
        "depth": st.depth,
        "readings": st.readings,
        "oldest_age_s": st.oldest_age_s,
        "next_seq": st.next_seq,
        "dropped": st.dropped,
        "gaps": st.gaps,
        "pending_gaps": st.pending_gaps,
        "awaiting_receipt": st.awaiting_receipt,
        "released": st.released,
    }
    if args.json:
        print(json.dumps(data))
    else:
        age = "-" if st.oldest_age_s is None else f"{st.oldest_age_s:.1f}s"
        print(
            f"outbox {path}: depth={st.depth} readings={st.readings} oldest_age={age} "
            f"next_seq={st.next_seq} dropped={st.dropped} gaps={st.gaps} "
            f"awaiting_receipt={st.awaiting_receipt} released={st.released}"
        )
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from edge_agent.simulate import FleetSimulator, Scenario

    scenario = Scenario.load(args.scenario)
    sim = FleetSimulator(scenario)
    out = Path(args.out)
    stop = threading.Event()
    previous = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    _install_stop_handlers(stop)
    agents: list[Any] = []
    threads: list[threading.Thread] = []
    if args.agents:
        from edge_agent.app import EdgeAgent
        from edge_agent.config import load_config

        base = load_config(args.agents)
        sim.write_step(out, 0)  # the probes must exist before the agents look for them
        for dev in sim.devices:
            agent = EdgeAgent(sim.agent_config(base, out, dev))
            agent.start()
            agents.append(agent)
            t = threading.Thread(target=agent.run, args=(stop,), name=f"agent-{dev.device_id}")
            t.start()
            threads.append(t)
    t0 = time.monotonic()
    try:
        n = sim.run(out, realtime=not args.fast, steps=args.steps, should_stop=stop.is_set)
    finally:
        stop.set()
        for t in threads:
            t.join()
        for agent in agents:
            agent.shutdown()
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    elapsed = time.monotonic() - t0
    rate = n / elapsed if elapsed > 0 else 0.0
    print(
        f"simulated devices={len(sim.devices)} readings={n} seconds={elapsed:.2f} "
        f"rate={rate:.0f}/s out={out} labels={out / 'labels.jsonl'}"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

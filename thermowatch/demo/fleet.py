"""The demo's simulated fleet: simulators writing fake 1-Wire trees, real edge agents.

:class:`DemoFleet` plays a :class:`~thermowatch.demo.plan.FleetPlan`: one
:class:`~edge_agent.simulate.FleetSimulator` per site writes the fake w1
trees, one real :class:`~edge_agent.app.EdgeAgent` per device reads them (in
this process, one thread each), except the device that goes offline: its
agent is a subprocess (``python -m edge_agent run``) so that it can be killed
with SIGKILL (the broker then publishes its last will, the retained
``offline`` status) and started again later (it replays its outbox).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from thermowatch.demo.plan import FleetPlan

__all__ = ["DemoFleet"]

log = logging.getLogger(__name__)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


class DemoFleet:
    """Plays a :class:`FleetPlan`: simulators, agents, the killable agent subprocess.

    ``mqtt_ports`` sends some devices to another port than ``mqtt["port"]`` (a
    cuttable proxy in front of the broker); ``mqtt_options`` overrides fields of
    every agent's ``[mqtt]`` section (e.g. a short ``reconnect_max_s``).
    """

    def __init__(
        self,
        fleet_plan: FleetPlan,
        *,
        run_dir: Path,
        w1_dir: Path,
        mqtt: Mapping[str, Any],
        run_id: str,
        interval_s: float = 1.0,
        mqtt_ports: Mapping[str, int] | None = None,
        mqtt_options: Mapping[str, Any] | None = None,
        outbox_options: Mapping[str, Any] | None = None,
        config_public_key: str = "",
    ) -> None:
        from edge_agent.simulate import Fleet, FleetSimulator, Incident, Scenario

        self.plan = fleet_plan
        self.run_dir = run_dir
        self.w1_dir = w1_dir
        self.mqtt = mqtt
        self.run_id = run_id
        self.interval_s = interval_s
        self.mqtt_ports = dict(mqtt_ports or {})
        self.mqtt_options = dict(mqtt_options or {})
        self.outbox_options = dict(outbox_options or {})
        #: The config publisher's public key every agent trusts ("": none, remote config off).
        self.config_public_key = config_public_key
        #: device -> temperature forced on its probe (see :meth:`force`).
        self._forced: dict[str, float] = {}
        self._write_lock = threading.Lock()
        self.sims: list[Any] = []
        for i, (site, devs) in enumerate(fleet_plan.sites.items()):
            incs = [
                Incident(
                    kind=p.kind,  # type: ignore[arg-type]
                    start_s=p.start_s,
                    duration_s=p.duration_s,
                    device=list(devs).index(p.device_id),
                    sensor=0,
                    magnitude_c=p.magnitude_c,
                )
                for p in fleet_plan.incidents
                if p.site == site
            ]
            sc = Scenario(
                seed=1000 + i,
                interval_s=interval_s,
                duration_s=fleet_plan.duration_s,
                fleet=Fleet(
                    devices=len(devs),
                    site=site,
                    sensors_per_device=1,
                    base_c=fleet_plan.base_c[site],
                    noise_c=0.1,
                    base_spread_c=0.3,
                ),
                incident=incs,
            )
            sim = FleetSimulator(sc)
            # The simulator numbers devices <prefix>001; the demo fleet has the MQTT users' names.
            sim.devices = [
                replace(d, device_id=dev) for d, dev in zip(sim.devices, devs, strict=True)
            ]
            self.sims.append(sim)
        self.agents: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._sim_stop = threading.Event()
        self._sim_thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.steps_written = 0
        self.configs: dict[str, Any] = {}

    # Configuration -----------------------------------------------------------------
    def state_dir(self, device_id: str) -> Path:
        return self.run_dir / "edge" / device_id

    def outbox_paths(self) -> dict[str, Path]:
        return {dev: self.configs[dev].outbox_path for dev in self.plan.devices}

    def _config(self, device_id: str) -> Any:
        from deploy.local.pki import client_tls
        from edge_agent.config import (
            DetectorSettings,
            DeviceSettings,
            EdgeConfig,
            GpioSettings,
            MqttSettings,
            OutboxSettings,
            RemoteConfigSettings,
            SamplingSettings,
            SensorsSettings,
        )

        cfg = EdgeConfig(
            device=DeviceSettings(
                device_id=device_id,
                site=self.plan.site_of(device_id),
                state_dir=str(self.state_dir(device_id)),
            ),
            sensors=SensorsSettings(
                w1_root=str(self.w1_dir / device_id),
                stuck_after=self.plan.stuck_after,
            ),
            sampling=SamplingSettings(interval_s=self.interval_s),
            detector=DetectorSettings(name="zscore", params={"warmup": 20}),
            gpio=GpioSettings(enabled=False, pin_factory="mock"),
            outbox=OutboxSettings(**{"flush_timeout_s": 15.0, **self.outbox_options}),
            mqtt=MqttSettings(
                **{
                    "host": str(self.mqtt["host"]),
                    "port": int(self.mqtt_ports.get(device_id, self.mqtt["port"])),
                    "username": device_id,
                    # TLS with the device's certificate from the stack's CA (its login).
                    **client_tls(self.mqtt, device_id).edge_mqtt(),
                    # The device id: the only client id the broker accepts for it.
                    "client_id": device_id,
                    "session_expiry_s": 0,  # a device needs no broker session
                    **self.mqtt_options,
                }
            ),
            remote_config=RemoteConfigSettings(public_key_file=self.config_public_key),
        )
        problems = cfg.validate()
        if problems:
            raise ValueError("; ".join(problems))
        return cfg

    # Lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Write step 0, start every agent, then the simulator clock."""
        from edge_agent.app import EdgeAgent

        self.w1_dir.mkdir(parents=True, exist_ok=True)
        for sim in self.sims:
            for dev in sim.devices:
                (self.w1_dir / dev.device_id / "w1_bus_master1").mkdir(parents=True, exist_ok=True)
            sim.write_step(self.w1_dir, 0)
        for dev in self.plan.devices:
            self.configs[dev] = self._config(dev)
        for dev in self.plan.devices:
            if dev == self.plan.offline_device:
                self.start_subprocess_agent()
                continue
            agent = EdgeAgent(self.configs[dev])
            agent.start()
            self.agents[dev] = agent
            t = threading.Thread(target=agent.run, args=(self._stop,), name=f"agent-{dev}")
            t.start()
            self._threads.append(t)
        self._sim_thread = threading.Thread(target=self._simulate, name="simulator", daemon=True)
        self._sim_thread.start()

    def _simulate(self) -> None:
        t0 = time.monotonic()
        step = 1
        while not self._sim_stop.is_set():
            delay = t0 + step * self.interval_s - time.monotonic()
            if delay > 0 and self._sim_stop.wait(delay):
                return
            with self._write_lock:
                for sim in self.sims:
                    sim.write_step(self.w1_dir, step)
                for dev, temp in self._forced.items():
                    self._write_forced(dev, temp, step)
            self.steps_written = step
            step += 1

    def force(self, device_id: str, temp_c: float | None) -> None:
        """Hold ``device_id``'s probe at about ``temp_c`` from now on (None: let go).

        An incident injected at run time (the chaos tests open an alert this
        way): the value jitters by a few LSB, so the edge never calls it stuck.
        Meanwhile the simulator writes the device's own values into a scratch
        tree (its noise stream goes on), so the agent never reads one of them.
        """
        with self._write_lock:
            sim, i = next(
                (sim, i)
                for sim in self.sims
                for i, d in enumerate(sim.devices)
                if d.device_id in (device_id, self._scratch_id(device_id))
            )
            dev = sim.devices[i]
            if temp_c is None:
                self._forced.pop(device_id, None)
                sim.devices[i] = replace(dev, device_id=device_id)  # from the next step on
                log.info("event=probe_released device=%s", device_id)
                return
            for sensor in dev.sensor_ids:
                (self.w1_dir / self._scratch_id(device_id) / sensor).mkdir(
                    parents=True, exist_ok=True
                )
            sim.devices[i] = replace(dev, device_id=self._scratch_id(device_id))
            self._forced[device_id] = temp_c
            self._write_forced(device_id, temp_c, self.steps_written)
        log.info("event=probe_forced device=%s temp_c=%s", device_id, temp_c)

    @staticmethod
    def _scratch_id(device_id: str) -> str:
        return f".unforced-{device_id}"

    def _write_forced(self, device_id: str, temp_c: float, step: int) -> None:
        from edge_agent.simulate import w1_slave_text

        sensor = next(
            d.sensor_ids[0]
            for sim in self.sims
            for d in sim.devices
            if d.device_id == self._scratch_id(device_id)
        )
        folder = self.w1_dir / device_id / sensor
        tmp = folder / ".w1_slave.forced"
        tmp.write_text(w1_slave_text(temp_c + 0.25 * (step % 3)), encoding="ascii")
        tmp.replace(folder / "w1_slave")

    def _subprocess_config_file(self, device_id: str) -> Path:
        import msgspec
        import tomli_w

        path = self.run_dir / "edge" / f"{device_id}.toml"
        data = _drop_none(msgspec.to_builtins(self.configs[device_id]))
        path.write_text(tomli_w.dumps(data), encoding="utf-8")
        return path

    def start_subprocess_agent(self) -> None:
        """(Re)start the agent of the device that goes offline, as its own process."""
        dev = self.plan.offline_device
        cfg_file = self._subprocess_config_file(dev)
        log_file = self.run_dir / "logs" / f"edge-{dev}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "-c", str(cfg_file)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "GPIOZERO_PIN_FACTORY": "mock"},
            )
        log.info("event=agent_process_started device=%s pid=%d", dev, self._proc.pid)

    def kill_subprocess_agent(self) -> None:
        """SIGKILL: no clean goodbye, so the broker publishes the last will (offline)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(30)
            log.info("event=agent_process_killed device=%s", self.plan.offline_device)

    def subprocess_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stop the clock, then every agent cleanly (each flushes its outbox first)."""
        self._sim_stop.set()
        if self._sim_thread is not None:
            self._sim_thread.join(10)
        self._stop.set()
        for t in self._threads:
            t.join(60)
        for agent in self.agents.values():
            agent.shutdown()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)

    def restart_offline_if_needed(self) -> None:
        """Make sure the offline device's agent runs (so its outbox is replayed)."""
        if not self.subprocess_running():
            self.start_subprocess_agent()

"""The demo's script as steps: what happens when, and playing it.

:func:`script` turns a :class:`~thermowatch.demo.plan.FleetPlan` into
:class:`Step` data (pure); :class:`ScenarioPlayer` plays the steps that are
due against the running fleet and writes the ground truth (incident times)
into the run record. The simulator's own incidents (door, stuck probe, fire)
need nothing but a note: the simulator injects them on its clock.

>>> from thermowatch.demo.plan import plan
>>> p = plan({"s1": ["s1-d01", "s1-d02", "s1-d03"], "s2": ["s2-d01", "s2-d02"],
...           "s3": ["s3-d01", "s3-d02"]}, 100.0)
>>> for step in script(p):
...     print(step.at_s, step.label)
20.0 inject door_open on s1-d03
20.0 inject stuck on s2-d01
35.0 inject fire on s3-d01
45.0 offline
55.0 malformed
70.0 online
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from telemetry_contract import TopicKind, mqtt_topic
from thermowatch.demo.fleet import DemoFleet
from thermowatch.demo.malformed import malformed_payloads, publish_malformed
from thermowatch.demo.plan import FleetPlan
from thermowatch.demo.run import DemoRun, now_ms

__all__ = ["Action", "ScenarioPlayer", "Step", "script"]


class Action(enum.StrEnum):
    """What a step does (declared in the order steps due at the same time are played)."""

    #: The simulator starts an incident (nothing to do but say so).
    INJECT = "inject"
    #: Publish the malformed burst as a device.
    MALFORMED = "malformed"
    #: SIGKILL the agent that goes offline (the broker publishes its last will).
    KILL_AGENT = "offline"
    #: Start that agent again (it replays its outbox).
    RESTART_AGENT = "online"


_RANK: dict[Action, int] = {a: i for i, a in enumerate(Action)}


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the script: at ``at_s`` seconds from the start, ``action`` on a device."""

    at_s: float
    action: Action
    device_id: str
    #: The simulator incident (``INJECT`` only).
    incident: str = ""

    @property
    def label(self) -> str:
        """The step as the script lists it.

        >>> Step(1.0, Action.INJECT, "d", "fire").label, Step(2.0, Action.KILL_AGENT, "d").label
        ('inject fire on d', 'offline')
        """
        if self.action is Action.INJECT:
            return f"inject {self.incident} on {self.device_id}"
        return self.action.value


def script(fleet_plan: FleetPlan) -> list[Step]:
    """The steps of a plan, in the order they are played."""
    p = fleet_plan
    steps = [Step(i.start_s, Action.INJECT, i.device_id, i.kind) for i in p.incidents]
    steps += [
        Step(p.offline_at_s, Action.KILL_AGENT, p.offline_device),
        Step(p.online_at_s, Action.RESTART_AGENT, p.offline_device),
        Step(p.malformed_at_s, Action.MALFORMED, p.malformed_device),
    ]
    return sorted(steps, key=lambda s: (s.at_s, _RANK[s.action], s.incident, s.device_id))


class ScenarioPlayer:
    """Plays a plan's steps against a running fleet, noting each one with ``note``.

    Call :meth:`begin` once the fleet has started, :meth:`play_due` with the
    elapsed time as often as you like, and :meth:`finish` when the run ends.
    """

    def __init__(
        self,
        run: DemoRun,
        fleet: DemoFleet,
        fleet_plan: FleetPlan,
        mqtt: Mapping[str, Any],
        *,
        note: Callable[[str], None],
        malformed_count: int = 24,
    ) -> None:
        self.run = run
        self.fleet = fleet
        self.plan = fleet_plan
        self.mqtt = mqtt
        self.note = note
        self.malformed_count = malformed_count
        self.steps = script(fleet_plan)
        #: When the agent was killed (0: not yet).
        self.offline_since = 0
        self._offline_recorded = False

    def begin(self) -> None:
        """Write the simulator's incidents and the burst's topic into the run record."""
        run, p = self.run, self.plan
        for i in p.incidents:
            run.record_incident(
                i.kind,
                i.device_id,
                run.started_ms + int(i.start_s * 1000),
                run.started_ms + int(i.label_end_s * 1000),
            )
        run.malformed_topic = mqtt_topic(
            p.site_of(p.malformed_device), p.malformed_device, TopicKind.TELEMETRY
        )
        run.save()

    async def play_due(self, elapsed_s: float) -> None:
        """Play every step due at ``elapsed_s``."""
        while self.steps and self.steps[0].at_s <= elapsed_s:
            await self._play(self.steps.pop(0))

    def finish(self) -> None:
        """Close the offline incident if the agent was killed but not yet restarted."""
        if self.offline_since and not self._offline_recorded:
            self._record_offline()

    def _record_offline(self) -> None:
        self.run.record_incident("offline", self.plan.offline_device, self.offline_since, now_ms())
        self._offline_recorded = True

    async def _play(self, step: Step) -> None:
        dev = step.device_id
        if step.action is Action.KILL_AGENT:
            self.offline_since = now_ms()
            await asyncio.to_thread(self.fleet.kill_subprocess_agent)
            self.note(f"kill -9 the agent of {dev} (last will)")
        elif step.action is Action.RESTART_AGENT:
            await asyncio.to_thread(self.fleet.restart_offline_if_needed)
            self._record_offline()
            self.note(f"agent of {dev} started again (replays)")
        elif step.action is Action.MALFORMED:
            others = [d for d in self.run.devices if d != dev]
            payloads = malformed_payloads(
                dev, others[0], self.plan.site_of(dev), self.malformed_count
            )
            self.run.malformed_sent = await asyncio.to_thread(
                publish_malformed,
                self.mqtt,
                dev,
                self.run.malformed_topic,
                payloads,
                self.run.run_id,
            )
            self.note(f"{self.run.malformed_sent} malformed payloads published as {dev}")
        else:
            self.note(step.label)

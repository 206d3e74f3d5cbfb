"""What every rule is built from: the facts about a device, and the rule hooks.

A rule is a small class derived from :class:`FleetRule` that overrides the
hooks it listens to and returns :class:`~cloud_processor.rules.lifecycle.Signal`
verdicts; :class:`~cloud_processor.rules.fleet.FleetRules` calls the hooks and
applies the signals to the alert book. Rules read the book (is my alert
active?) but never write it, and keep their own per-device state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from cloud_processor.rules.lifecycle import AlertBook, Signal
from cloud_processor.rules.settings import RuleSettings
from telemetry_contract import (
    AlertChange,
    DeviceState,
    DeviceStatus,
    EdgeAlert,
    Gap,
    Reading,
    Rule,
    Severity,
)

__all__ = ["Device", "FleetRule", "Verdict", "repack"]


def repack(owner: object) -> None:
    """Copy each dict and set attribute of ``owner`` anew.

    CPython's dicts and sets never give back the table of their largest
    size when items are removed: after most of a fleet went idle and was
    compacted, the per-device dicts of the rules would keep hundreds of bytes
    per device that is no longer there. A copy is sized for what it holds.

    >>> class Rule:
    ...     def __init__(self):
    ...         self.state = {i: i for i in range(1000)}
    >>> rule = Rule(); before = rule.state
    >>> rule.state.clear(); rule.state[1] = 1; repack(rule)
    >>> rule.state, rule.state is before
    ({1: 1}, False)
    """
    for name, value in list(vars(owner).items()):
        if type(value) is dict:
            setattr(owner, name, dict(value))
        elif type(value) is set:
            setattr(owner, name, set(value))


@dataclass(slots=True)
class Device:
    """What the rules know about one device, kept up to date by the facade."""

    device_id: str
    site: str
    #: Its effective rule settings (defaults refined by its groups).
    settings: RuleSettings
    #: Event time of its newest reading judged.
    last_ts: int | None = None
    #: Processing time of that reading (or of its last ``online`` status).
    last_seen_ms: int | None = None
    #: Its newest good temperature.
    last_temp: float | None = None
    sensor_id: str | None = None
    #: Its last status said ``offline`` (the MQTT last will).
    offline: bool = False
    #: Event time of its last status, as ordered by :meth:`take_status`.
    status_ts: int = 0

    def take_reading(self, reading: Reading, now_ms: int) -> bool:
        """Note a reading about to be judged; whether it is the newest so far."""
        if self.last_ts is not None and reading.ts < self.last_ts:
            return False
        self.last_ts = reading.ts
        self.last_seen_ms = now_ms
        self.sensor_id = reading.sensor_id
        return True

    def take_status(self, status: DeviceStatus, now_ms: int) -> int | None:
        """Note a status; its event time as ordered, or None if a newer one came first.

        A last will is composed when the device connects, so it carries the
        same ``ts`` as the ``online`` status of that connection, yet it always
        comes after it: an offline status that ties with the online status
        before it is ordered one millisecond later (deterministically, so a
        replay gives the same alert).
        """
        offline = status.state is DeviceState.OFFLINE
        ts = status.ts
        if offline and ts == self.status_ts and not self.offline:
            ts += 1
        if ts < self.status_ts:
            return None  # an older status overtaken by a newer one
        self.status_ts = ts
        self.offline = offline
        if not offline:
            self.last_seen_ms = now_ms  # give it stale_after_s to send a reading
        return ts

    def signal(
        self,
        rule: Rule,
        *,
        active: bool,
        ts: int,
        severity: Severity = Severity.WARNING,
        value: float | None = None,
        threshold: float | None = None,
        score: float | None = None,
        message: str = "",
        confirmed: bool = False,
    ) -> Signal:
        """A verdict of ``rule`` about this device."""
        return Signal(
            device_id=self.device_id,
            site=self.site,
            rule=rule,
            active=active,
            ts=ts,
            severity=severity,
            value=value,
            threshold=threshold,
            score=score,
            message=message,
            sensor_id=self.sensor_id,
            confirmed=confirmed,
        )


class Verdict(NamedTuple):
    """A signal decided at a tick, and whether it is late."""

    signal: Signal
    late: bool


class FleetRule:
    """Base of every rule: override the hooks the rule listens to.

    The defaults decide nothing; the facade calls only the hooks a rule
    overrides, in registry order. ``self.alerts`` is the alert book, to ask
    whether the rule's alert is active (clear signals are only built for
    those: most readings clear nothing, and this is the hot path).
    """

    def __init__(self, alerts: AlertBook) -> None:
        self.alerts = alerts

    def on_reading(self, device: Device, reading: Reading) -> Signal | None:
        """Every reading the reorder stage releases, newest or not, good or not."""
        return None

    def on_temperature(self, device: Device, ts: int, temp_c: float) -> Signal | None:
        """A device's newest good temperature (quality ok, newest event time)."""
        return None

    def on_status(self, device: Device, status: DeviceStatus, ts: int) -> Signal | None:
        """A device status, ``ts`` its event time as ordered by :meth:`Device.take_status`."""
        return None

    def on_edge_alert(self, device: Device, alert: EdgeAlert) -> Signal | None:
        """An alert raised or cleared by the edge agent."""
        return None

    def on_gap(self, device: Device, gap: Gap) -> Signal | None:
        """Readings the edge dropped."""
        return None

    def on_tick(self, devices: Mapping[str, Device], now_ms: int, watermark: int) -> list[Verdict]:
        """Once per batch: rules over time (processing time ``now_ms``) or over many devices.

        ``watermark``: event time before which events are late.
        """
        return []

    def on_changes(self, device: Device, changes: list[AlertChange], ts: int) -> list[Signal]:
        """Alerts of ``device`` changed (at event time ``ts``): react to other rules."""
        return []

    def forget(self, device_id: str, site: str) -> None:
        """Drop what the rule keeps about a device (evicted: idle, or over
        ``max_devices``). Every rule with per-device state overrides it; the
        registry conformance test checks that nothing of the device is left."""

    def park(self, device_id: str, site: str) -> Any:
        """Take the device's state out (it is being compacted: idle) as plain
        data msgpack can encode (None: nothing worth keeping), and forget it.

        :meth:`unpark` gets it back when the device is heard from again, so
        that the device is judged as if it had never been compacted. The
        default keeps nothing: rules whose state can decide a later verdict
        override both.
        """
        self.forget(device_id, site)
        return None

    def unpark(self, device: Device, state: Any) -> None:
        """Put back what :meth:`park` returned (never called with None)."""

    def resume(self, device: Device, last_ts: int) -> None:
        """A device known here only from storage (its last reading's event time,
        ``last_ts``): it was another processor's, or this one's before a restart.
        Rules that watch for something *not* happening start watching it."""

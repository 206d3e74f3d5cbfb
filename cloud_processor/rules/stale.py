"""Stale sensor: no reading for ``stale_after_s`` of processing time.

Judged at every tick (processing time, so never late); the alert's event time
is the last reading's plus ``stale_after_s``. Any reading clears it. A device
whose last status said offline has its own alert instead.

A tick looks only at the devices that are due: each device has one deadline
(when it would go stale if nothing more came) in a heap, so a tick costs the
devices whose deadline passed, not the fleet (:attr:`StaleSensor.examined`
counts them). A message that moves the deadline later leaves the entry where
it is: when it comes up early, the device is put back at its new deadline.

>>> from cloud_processor.rules.lifecycle import AlertBook
>>> from cloud_processor.rules.settings import AlertSettings, RuleSettings
>>> from telemetry_contract import Reading
>>> rule = StaleSensor(AlertBook(AlertSettings()))
>>> dev = Device("d1", "s1", RuleSettings(stale_after_s=60), last_ts=5_000, last_seen_ms=5_000)
>>> rule.on_reading(dev, Reading(device_id="d1", sensor_id="host", site="s1", seq=1, ts=5_000,
...                              temp_c=4.0))
>>> rule.on_tick({"d1": dev}, now_ms=64_000, watermark=0)
[]
>>> [(v.signal.ts, v.signal.message) for v in rule.on_tick({"d1": dev}, now_ms=65_000, watermark=0)]
[(65000, 'no reading for 60 s (limit 60 s)')]
>>> rule.on_tick({"d1": dev}, now_ms=70_000, watermark=0), rule.examined   # fired once
([], 1)
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping

from cloud_processor.rules.base import Device, FleetRule, Verdict
from cloud_processor.rules.lifecycle import AlertBook, Signal
from telemetry_contract import DeviceStatus, Reading, Rule

__all__ = ["StaleSensor"]


class StaleSensor(FleetRule):
    """``stale_sensor``: see the module doc."""

    def __init__(self, alerts: AlertBook) -> None:
        super().__init__(alerts)
        #: (deadline, device_id): the stdlib heap (heapq), one live entry per device.
        self._due: list[tuple[int, str]] = []
        #: device_id -> the deadline of its live entry (other entries of it are stale).
        self._armed: dict[str, int] = {}
        #: Heap entries a tick has looked at, since the start: the tick's work.
        self.examined = 0
        #: device_id -> event time of its last reading, for the devices known
        #: only from storage (:meth:`resume`) until they send one here.
        self._resumed: dict[str, int] = {}

    def forget(self, device_id: str, site: str) -> None:
        # Its heap entry, if any, is skipped when it comes up (not armed).
        self._armed.pop(device_id, None)
        self._resumed.pop(device_id, None)

    def resume(self, device: Device, last_ts: int) -> None:
        # Silent since before this process took it: stale on time all the same.
        self._resumed[device.device_id] = last_ts
        self._arm(device)

    def on_reading(self, device: Device, reading: Reading) -> Signal | None:
        # Any reading: a newer one moves the deadline; a clear below re-arms a
        # device that is still silent, so that the next tick says again that
        # it is stale (what a scan of every device at every tick would do).
        self._arm(device)
        self._resumed.pop(device.device_id, None)
        if self.alerts.active(device.device_id, Rule.STALE) is None:
            return None
        return device.signal(Rule.STALE, active=False, ts=reading.ts, message="readings resumed")

    def on_status(self, device: Device, status: DeviceStatus, ts: int) -> Signal | None:
        self._arm(device)  # back online: it has stale_after_s to send a reading
        return None

    def _arm(self, device: Device) -> None:
        """Make sure the device is looked at by its deadline."""
        if device.last_seen_ms is None:
            return
        due = device.last_seen_ms + math.ceil(device.settings.stale_after_s * 1000)
        armed = self._armed.get(device.device_id)
        if armed is None or due < armed:
            self._armed[device.device_id] = due
            heapq.heappush(self._due, (due, device.device_id))

    def on_tick(self, devices: Mapping[str, Device], now_ms: int, watermark: int) -> list[Verdict]:
        out: list[Verdict] = []
        due = self._due
        while due and due[0][0] <= now_ms:
            deadline, device_id = heapq.heappop(due)
            if self._armed.get(device_id) != deadline:
                continue  # superseded by an earlier deadline, or forgotten
            del self._armed[device_id]
            self.examined += 1
            device = devices.get(device_id)
            if device is None or device.last_seen_ms is None:
                continue
            last_ts = device.last_ts if device.last_ts is not None else self._resumed.get(device_id)
            if last_ts is None:
                continue
            limit_s = device.settings.stale_after_s
            silent_ms = now_ms - device.last_seen_ms
            if silent_ms < limit_s * 1000:
                self._arm(device)  # heard from since: its deadline moved
                continue
            if device.offline:
                continue  # its status re-arms it when it comes back online
            signal = device.signal(
                Rule.STALE,
                active=True,
                ts=last_ts + int(limit_s * 1000),
                message=f"no reading for {silent_ms / 1000:.0f} s (limit {limit_s:.0f} s)",
            )
            out.append(Verdict(signal, late=False))
        return out

"""Sensor-fault storm: ``fault_storm_count`` non-ok readings within ``fault_storm_window_s``.

Sees every reading, in or out of order (event time); clears once the window
holds no faulty reading.

>>> from cloud_processor.rules.lifecycle import AlertBook
>>> from cloud_processor.rules.settings import AlertSettings, RuleSettings
>>> from telemetry_contract import Quality, Reading
>>> rule = FaultStorm(AlertBook(AlertSettings()))
>>> dev = Device("d1", "s1", RuleSettings(fault_storm_count=2))
>>> def bad(ts):
...     return Reading(device_id="d1", sensor_id="host", site="s1", seq=ts, ts=ts,
...                    temp_c=None, quality=Quality.CRC_ERROR)
>>> rule.on_reading(dev, bad(1_000)) is None
True
>>> rule.on_reading(dev, bad(2_000)).message
'2 faulty readings in 60 s (last: crc_error)'
"""

from __future__ import annotations

from collections import deque
from typing import Any

from cloud_processor.rules.base import Device, FleetRule
from cloud_processor.rules.lifecycle import AlertBook, Signal
from telemetry_contract import Quality, Reading, Rule

__all__ = ["FaultStorm"]


class FaultStorm(FleetRule):
    """``sensor_fault_storm``: see the module doc."""

    def __init__(self, alerts: AlertBook) -> None:
        super().__init__(alerts)
        #: device -> event times of its faulty readings within the window.
        self._faults: dict[str, deque[int]] = {}

    def forget(self, device_id: str, site: str) -> None:
        self._faults.pop(device_id, None)

    def park(self, device_id: str, site: str) -> Any:
        faults = self._faults.pop(device_id, None)
        return list(faults) if faults else None

    def unpark(self, device: Device, state: Any) -> None:
        faults = deque(state, maxlen=device.settings.fault_storm_count)
        self._faults[device.device_id] = faults

    def on_reading(self, device: Device, reading: Reading) -> Signal | None:
        settings = device.settings
        faults = self._faults.get(device.device_id)
        if faults is None:
            if reading.quality is Quality.OK:
                # Most devices never have a faulty reading: no window for them
                # (an empty deque costs ~760 bytes).
                return self._clear(device, reading)
            # Bounded: faults stamped alike (one ts, many seqs) cannot grow it;
            # more than fault_storm_count changes no verdict.
            faults = self._faults[device.device_id] = deque(maxlen=settings.fault_storm_count)
        if reading.quality is not Quality.OK:
            faults.append(reading.ts)
        horizon = reading.ts - int(settings.fault_storm_window_s * 1000)
        while faults and faults[0] < horizon:
            faults.popleft()
        if len(faults) >= settings.fault_storm_count:
            return device.signal(
                Rule.FAULT_STORM,
                active=True,
                ts=reading.ts,
                value=float(len(faults)),
                threshold=float(settings.fault_storm_count),
                message=f"{len(faults)} faulty readings in {settings.fault_storm_window_s:.0f} s "
                f"(last: {reading.quality.value})",
            )
        if faults:
            return None
        return self._clear(device, reading)

    def _clear(self, device: Device, reading: Reading) -> Signal | None:
        """No faulty reading in the window: clear the alert, if one is active."""
        if self.alerts.active(device.device_id, Rule.FAULT_STORM) is None:
            return None
        settings = device.settings
        return device.signal(
            Rule.FAULT_STORM,
            active=False,
            ts=reading.ts,
            message=f"no faulty reading for {settings.fault_storm_window_s:.0f} s",
        )

"""Rate of change: |Δ°C/min| over ``rate_window_s`` at or above ``rate_max_c_per_min``.

Clears at ``rate_clear_c_per_min`` (default: half the limit). The rate is
taken from the oldest reading in the window to the newest, and only once
the window spans at least half of ``rate_window_s``: over a shorter baseline
one LSB step of the sensor would look like a storm.

>>> from cloud_processor.rules.lifecycle import AlertBook
>>> from cloud_processor.rules.settings import AlertSettings, RuleSettings
>>> rule = RateOfChange(AlertBook(AlertSettings()))
>>> dev = Device("d1", "s1", RuleSettings(rate_max_c_per_min=2.0, rate_window_s=60))
>>> rule.on_temperature(dev, 0, 4.0), rule.on_temperature(dev, 10_000, 8.0)
(None, None)
>>> rule.on_temperature(dev, 40_000, 8.0).message
'temperature changing at +6.00 °C/min (limit 2)'
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

from cloud_processor.rules.base import Device, FleetRule
from cloud_processor.rules.lifecycle import AlertBook, Signal
from telemetry_contract import Rule

__all__ = ["RateOfChange"]


#: Points kept per device within the window (17 per second over 60 s).
MAX_POINTS: Final = 1024


class RateOfChange(FleetRule):
    """``rate_of_change``: see the module doc."""

    def __init__(self, alerts: AlertBook) -> None:
        super().__init__(alerts)
        #: device -> (event time, temperature) of its good readings within the window.
        self._windows: dict[str, deque[tuple[int, float]]] = {}

    def forget(self, device_id: str, site: str) -> None:
        self._windows.pop(device_id, None)

    def park(self, device_id: str, site: str) -> Any:
        window = self._windows.pop(device_id, None)
        return [list(point) for point in window] if window else None

    def unpark(self, device: Device, state: Any) -> None:
        window = deque(((int(ts), float(temp)) for ts, temp in state), maxlen=MAX_POINTS)
        self._windows[device.device_id] = window

    def on_temperature(self, device: Device, ts: int, temp_c: float) -> Signal | None:
        settings = device.settings
        limit = settings.rate_max_c_per_min
        if limit is None:
            return None  # settings are fixed per device: no window to keep either
        window_ms = int(settings.rate_window_s * 1000)
        window = self._windows.get(device.device_id)
        if window is None:
            # Bounded: readings stamped alike (one ts, many seqs) cannot grow it.
            window = self._windows[device.device_id] = deque(maxlen=MAX_POINTS)
        window.append((ts, temp_c))
        while window and window[0][0] < ts - window_ms:
            window.popleft()
        first_ts, first_temp = window[0]
        span_ms = ts - first_ts
        if span_ms < window_ms / 2:
            return None
        rate = (temp_c - first_temp) / (span_ms / 60_000)
        if abs(rate) >= limit:
            return device.signal(
                Rule.RATE_OF_CHANGE,
                active=True,
                ts=ts,
                value=round(rate, 3),
                threshold=limit,
                message=f"temperature changing at {rate:+.2f} °C/min (limit {limit:g})",
            )
        clear = settings.rate_clear_c_per_min
        if clear is None:
            clear = limit / 2
        if abs(rate) > clear or self.alerts.active(device.device_id, Rule.RATE_OF_CHANGE) is None:
            return None
        return device.signal(
            Rule.RATE_OF_CHANGE,
            active=False,
            ts=ts,
            value=round(rate, 3),
            message=f"rate {rate:+.2f} °C/min within {clear:g}",
        )

"""Threshold rules: beyond an absolute limit for ``min_duration_s``, with hysteresis.

One implementation for both directions: :data:`HIGH` (``threshold_high``:
at or above ``threshold_high_c``, critical at ``critical_high_c``) and
:data:`LOW` (``threshold_low``: at or below ``threshold_low_c``, critical at
``critical_low_c``). The alert clears ``hysteresis_c`` back inside the limit,
so a value oscillating around the limit makes no noise.

>>> from cloud_processor.rules.lifecycle import AlertBook
>>> from cloud_processor.rules.settings import AlertSettings, RuleSettings
>>> book = AlertBook(AlertSettings())
>>> rule = Threshold(book, HIGH)
>>> dev = Device("d1", "s1", RuleSettings(threshold_high_c=8.0, min_duration_s=60))
>>> rule.on_temperature(dev, 0, 9.0) is None                  # not for 60 s yet
True
>>> s = rule.on_temperature(dev, 60_000, 9.5)
>>> s.rule.value, s.active, s.severity.value, s.message
('threshold_high', True, 'warning', 'temp_c 9.5 >= 8.0 for 60 s')
>>> _ = book.apply(s, late=False)
>>> rule.on_temperature(dev, 70_000, 7.5) is None             # inside the hysteresis band
True
>>> rule.on_temperature(dev, 80_000, 7.0).message
'temp_c 7.0 <= 7 (threshold 8 - hysteresis 1)'
>>> Threshold(book, LOW).on_temperature(dev, 80_000, -40.0) is None   # no low limit set
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final

from cloud_processor.rules.base import Device, FleetRule
from cloud_processor.rules.lifecycle import AlertBook, Signal
from cloud_processor.rules.settings import RuleSettings
from telemetry_contract import Rule, Severity

__all__ = ["HIGH", "LOW", "Direction", "Threshold"]


@dataclass(frozen=True, slots=True)
class Direction:
    """Which side of the limit is bad, and how the messages say it."""

    rule: Rule
    #: +1: at or above the limit is bad; -1: at or below (comparisons on sign * value).
    sign: int
    limit: Callable[[RuleSettings], float | None]
    critical: Callable[[RuleSettings], float | None]
    beyond: str  # "temp_c 9.5 >= 8.0"
    inside: str  # "temp_c 7.0 <= 7"
    hysteresis: str  # "threshold 8 - hysteresis 1"


HIGH: Final = Direction(
    Rule.THRESHOLD_HIGH,
    sign=1,
    limit=attrgetter("threshold_high_c"),
    critical=attrgetter("critical_high_c"),
    beyond=">=",
    inside="<=",
    hysteresis="-",
)
LOW: Final = Direction(
    Rule.THRESHOLD_LOW,
    sign=-1,
    limit=attrgetter("threshold_low_c"),
    critical=attrgetter("critical_low_c"),
    beyond="<=",
    inside=">=",
    hysteresis="+",
)


class Threshold(FleetRule):
    """``threshold_high`` / ``threshold_low``: see the module doc."""

    def __init__(self, alerts: AlertBook, direction: Direction) -> None:
        super().__init__(alerts)
        self.direction = direction
        #: device -> event time since which it has been beyond the limit.
        self._beyond_since: dict[str, int] = {}

    def forget(self, device_id: str, site: str) -> None:
        self._beyond_since.pop(device_id, None)

    def park(self, device_id: str, site: str) -> Any:
        return self._beyond_since.pop(device_id, None)

    def unpark(self, device: Device, state: Any) -> None:
        self._beyond_since[device.device_id] = state

    def on_temperature(self, device: Device, ts: int, temp_c: float) -> Signal | None:
        settings = device.settings
        side = self.direction
        limit = side.limit(settings)
        if limit is None:
            return None
        if side.sign * temp_c >= side.sign * limit:
            since = self._beyond_since.setdefault(device.device_id, ts)
            if ts - since < settings.min_duration_s * 1000:
                return None
            critical = side.critical(settings)
            is_critical = critical is not None and side.sign * temp_c >= side.sign * critical
            return device.signal(
                side.rule,
                active=True,
                ts=ts,
                severity=Severity.CRITICAL if is_critical else Severity.WARNING,
                value=temp_c,
                threshold=critical if is_critical else limit,
                message=f"temp_c {temp_c} {side.beyond} {limit} for {(ts - since) / 1000:.0f} s",
            )
        self._beyond_since.pop(device.device_id, None)
        clear_at = limit - side.sign * settings.hysteresis_c
        if side.sign * temp_c > side.sign * clear_at:
            return None
        if self.alerts.active(device.device_id, side.rule) is None:
            return None
        return device.signal(
            side.rule,
            active=False,
            ts=ts,
            value=temp_c,
            message=f"temp_c {temp_c} {side.inside} {clear_at:g} (threshold {limit:g} "
            f"{side.hysteresis} hysteresis {settings.hysteresis_c:g})",
        )

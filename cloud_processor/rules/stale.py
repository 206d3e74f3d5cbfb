"""Stale sensor: no reading for ``stale_after_s`` of processing time.

Judged at every tick (processing time, so never late); the alert's event time
is the last reading's plus ``stale_after_s``. Any reading clears it. A device
whose last status said offline has its own alert instead.

>>> from cloud_processor.rules.lifecycle import AlertBook
>>> from cloud_processor.rules.settings import AlertSettings, RuleSettings
>>> rule = StaleSensor(AlertBook(AlertSettings()))
>>> dev = Device("d1", "s1", RuleSettings(stale_after_s=60), last_ts=5_000, last_seen_ms=5_000)
>>> rule.on_tick({"d1": dev}, now_ms=64_000, watermark=0)
[]
>>> [(v.signal.ts, v.signal.message) for v in rule.on_tick({"d1": dev}, now_ms=65_000, watermark=0)]
[(65000, 'no reading for 60 s (limit 60 s)')]
"""

from __future__ import annotations

from collections.abc import Mapping

from cloud_processor.rules.base import Device, FleetRule, Verdict
from cloud_processor.rules.lifecycle import Signal
from telemetry_contract import Reading, Rule

__all__ = ["StaleSensor"]


class StaleSensor(FleetRule):
    """``stale_sensor``: see the module doc."""

    def on_reading(self, device: Device, reading: Reading) -> Signal | None:
        if self.alerts.active(device.device_id, Rule.STALE) is None:
            return None
        return device.signal(Rule.STALE, active=False, ts=reading.ts, message="readings resumed")

    def on_tick(self, devices: Mapping[str, Device], now_ms: int, watermark: int) -> list[Verdict]:
        out: list[Verdict] = []
        for device in devices.values():
            if device.last_seen_ms is None or device.last_ts is None or device.offline:
                continue
            limit_s = device.settings.stale_after_s
            silent_ms = now_ms - device.last_seen_ms
            if silent_ms < limit_s * 1000:
                continue
            signal = device.signal(
                Rule.STALE,
                active=True,
                ts=device.last_ts + int(limit_s * 1000),
                message=f"no reading for {silent_ms / 1000:.0f} s (limit {limit_s:.0f} s)",
            )
            out.append(Verdict(signal, late=False))
        return out

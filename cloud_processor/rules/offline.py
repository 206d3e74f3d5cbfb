"""Device offline: status ``offline`` (the MQTT last will) opens; ``online`` resolves.

Statuses are put in order by :meth:`~cloud_processor.rules.base.Device.take_status`
before this rule sees them.

>>> from cloud_processor.rules.lifecycle import AlertBook
>>> from cloud_processor.rules.settings import AlertSettings, RuleSettings
>>> from telemetry_contract import DeviceState, DeviceStatus
>>> rule = DeviceOffline(AlertBook(AlertSettings()))
>>> dev = Device("d1", "s1", RuleSettings())
>>> will = DeviceStatus(device_id="d1", site="s1", ts=10, state=DeviceState.OFFLINE,
...                     reason="last will")
>>> rule.on_status(dev, will, ts=10).message
'device offline: last will'
"""

from __future__ import annotations

from cloud_processor.rules.base import Device, FleetRule
from cloud_processor.rules.lifecycle import Signal
from telemetry_contract import DeviceState, DeviceStatus, Rule

__all__ = ["DeviceOffline"]


class DeviceOffline(FleetRule):
    """``device_offline``: see the module doc."""

    def on_status(self, device: Device, status: DeviceStatus, ts: int) -> Signal | None:
        if status.state is DeviceState.OFFLINE:
            message = f"device offline: {status.reason}" if status.reason else "device offline"
            return device.signal(Rule.OFFLINE, active=True, ts=ts, message=message)
        # Resolved at the status' own time (``ts`` is only ever moved for a will).
        return device.signal(Rule.OFFLINE, active=False, ts=status.ts, message="device back online")

"""Device offline: status ``offline`` (the MQTT last will) opens; ``online`` resolves.

An announced offline (the agent's own ``shutdown`` status when it stops, or a
``maintenance`` window) is not a fault: its alert is informational
(severity ``info``, never notified, part of no incident), visible to the
operator and resolved as usual when the device is back. A silent loss (the
last will: ``connection lost``) keeps its severity.

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
>>> bye = DeviceStatus(device_id="d1", site="s1", ts=20, state=DeviceState.OFFLINE,
...                    reason="shutdown")
>>> signal = rule.on_status(dev, bye, ts=20)
>>> signal.severity, signal.message
(<Severity.INFO: 'info'>, 'device offline: shutdown')
"""

from __future__ import annotations

from cloud_processor.rules.base import Device, FleetRule
from cloud_processor.rules.lifecycle import Signal
from telemetry_contract import DeviceState, DeviceStatus, Rule, Severity

__all__ = ["ANNOUNCED", "DeviceOffline", "announced"]

#: Status reasons of an offline the device announced (its first word).
ANNOUNCED = frozenset({"shutdown", "maintenance"})


def announced(reason: str) -> bool:
    """Whether an offline status with ``reason`` was announced, not a loss.

    >>> announced("shutdown"), announced("maintenance: compressor swap"), announced("lost")
    (True, True, False)
    """
    first = reason.strip().split(":", 1)[0].split(";", 1)[0].split(None, 1)
    return bool(first) and first[0].lower() in ANNOUNCED


class DeviceOffline(FleetRule):
    """``device_offline``: see the module doc."""

    def on_status(self, device: Device, status: DeviceStatus, ts: int) -> Signal | None:
        if status.state is DeviceState.OFFLINE:
            message = f"device offline: {status.reason}" if status.reason else "device offline"
            severity = Severity.INFO if announced(status.reason) else Severity.WARNING
            return device.signal(
                Rule.OFFLINE, active=True, ts=ts, severity=severity, message=message
            )
        # Resolved at the status' own time (``ts`` is only ever moved for a will).
        return device.signal(Rule.OFFLINE, active=False, ts=status.ts, message="device back online")

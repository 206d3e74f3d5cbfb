"""Data gap: the edge reports a :class:`~telemetry_contract.Gap` (readings it dropped).

The alert stays open until a reading after the gap (a higher seq) arrives.

>>> from cloud_processor.rules.lifecycle import AlertBook
>>> from cloud_processor.rules.settings import AlertSettings, RuleSettings
>>> from telemetry_contract import Gap, GapReason, Reading
>>> rule = DataGap(AlertBook(AlertSettings()))
>>> dev = Device("d1", "s1", RuleSettings())
>>> gap = Gap(device_id="d1", site="s1", ts=1_000, first_seq=11, last_seq=20,
...           reason=GapReason.OUTBOX_FULL)
>>> rule.on_gap(dev, gap).message
'edge dropped seq 11..20 (10 readings, outbox_full)'
>>> def reading(seq):
...     return Reading(device_id="d1", sensor_id="host", site="s1", seq=seq, ts=2_000,
...                    temp_c=4.0)
>>> rule.on_reading(dev, reading(20)) is None, rule.on_reading(dev, reading(21)).message
(True, 'reading seq 21 arrived')
"""

from __future__ import annotations

from typing import Any

from cloud_processor.rules.base import Device, FleetRule
from cloud_processor.rules.lifecycle import AlertBook, Signal
from telemetry_contract import Gap, Reading, Rule

__all__ = ["DataGap"]


class DataGap(FleetRule):
    """``data_gap``: see the module doc."""

    def __init__(self, alerts: AlertBook) -> None:
        super().__init__(alerts)
        #: device -> last seq of the gaps reported (the alert clears past it).
        self._until_seq: dict[str, int] = {}

    def forget(self, device_id: str, site: str) -> None:
        # An open data_gap alert stays open after an eviction: keep the seq it
        # waits for (one int), so that the device's next reading past it clears it.
        if self.alerts.active(device_id, Rule.DATA_GAP) is None:
            self._until_seq.pop(device_id, None)

    def park(self, device_id: str, site: str) -> Any:
        return self._until_seq.pop(device_id, None)

    def unpark(self, device: Device, state: Any) -> None:
        self._until_seq[device.device_id] = state

    def on_gap(self, device: Device, gap: Gap) -> Signal | None:
        until = self._until_seq.get(device.device_id) or 0
        self._until_seq[device.device_id] = max(gap.last_seq, until)
        return device.signal(
            Rule.DATA_GAP,
            active=True,
            ts=gap.ts,
            value=float(gap.count),
            message=f"edge dropped seq {gap.first_seq}..{gap.last_seq} "
            f"({gap.count} readings, {gap.reason.value})",
        )

    def on_reading(self, device: Device, reading: Reading) -> Signal | None:
        until = self._until_seq.get(device.device_id)
        if until is None or reading.seq <= until:
            return None
        del self._until_seq[device.device_id]
        return device.signal(
            Rule.DATA_GAP, active=False, ts=reading.ts, message=f"reading seq {reading.seq} arrived"
        )

"""Fleet rules and the alert lifecycle: the processor's pure core.

:class:`FleetRules` turns messages (readings, device status, edge alerts, gaps)
and clock ticks into :class:`~telemetry_contract.AlertChange` records. It does
no I/O and reads no clock (the caller passes processing time), so a test
replays a crafted sequence and gets the same alerts every time. Three layers:

* :mod:`.reorder`: each device's readings back in seq order (two gateways
  can swap them), before any rule sees them;
* the rules, one small class each (:mod:`.threshold` for high and low,
  :mod:`.rate`, :mod:`.stale`, :mod:`.offline`, :mod:`.outlier`,
  :mod:`.edge`, :mod:`.fault_storm`, :mod:`.data_gap`), listed in
  :mod:`.registry`; each decides, per (device, rule), whether its condition
  *holds* or has *cleared* (a :class:`Signal`);
* :mod:`.lifecycle`: :class:`AlertBook` keeps one active alert per (device,
  rule) and turns signals into ``opened`` / ``updated`` / ``resolved``
  changes, with flapping suppression and lateness.

:mod:`.fleet` (:class:`FleetRules`) routes messages and ticks through them;
:mod:`.settings` declares every rule parameter once.
"""

from cloud_processor.rules.base import Device, FleetRule, Verdict
from cloud_processor.rules.fleet import FleetRules
from cloud_processor.rules.lifecycle import AlertBook, Signal
from cloud_processor.rules.outlier import robust_z
from cloud_processor.rules.registry import RULES

__all__ = [
    "RULES",
    "AlertBook",
    "Device",
    "FleetRule",
    "FleetRules",
    "Signal",
    "Verdict",
    "robust_z",
]

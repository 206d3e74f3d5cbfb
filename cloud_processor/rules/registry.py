"""Every fleet rule, in the order their signals are applied.

Within one reading, status, edge alert, gap or tick the facade calls each
hook in this order, so the order is part of the output (the changes of one
reading come out threshold, then rate, ...). A new rule is one class and
one line here (see ``cloud_processor/README.md``, "Adding a rule").
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Final

from cloud_processor.rules.base import FleetRule
from cloud_processor.rules.data_gap import DataGap
from cloud_processor.rules.edge import EdgeAlerts
from cloud_processor.rules.fault_storm import FaultStorm
from cloud_processor.rules.lifecycle import AlertBook
from cloud_processor.rules.offline import DeviceOffline
from cloud_processor.rules.outlier import FleetOutlier
from cloud_processor.rules.rate import RateOfChange
from cloud_processor.rules.stale import StaleSensor
from cloud_processor.rules.threshold import HIGH, LOW, Threshold

__all__ = ["RULES"]

#: Factories of every rule, given the alert book they read.
RULES: Final[tuple[Callable[[AlertBook], FleetRule], ...]] = (
    partial(Threshold, direction=HIGH),
    partial(Threshold, direction=LOW),
    RateOfChange,
    FleetOutlier,
    StaleSensor,
    DeviceOffline,
    EdgeAlerts,
    DataGap,
    FaultStorm,
)

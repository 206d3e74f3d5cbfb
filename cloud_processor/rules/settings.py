"""Settings of the fleet rules and of the alert lifecycle, declared once.

:class:`RuleSettings` lists every rule parameter with its default and range.
``[rules]`` (:class:`RulesConfig`) sets them fleet-wide, and each
``[rules.groups.<name>]`` (:class:`RuleGroup`) refines them for some ``sites``
and/or ``devices`` with the same flat keys. :class:`RuleGroup` is derived from
:class:`RuleSettings`, so a new rule parameter is declared in one place only.
Ranges are ``msgspec.Meta`` constraints (checked when a file is loaded, in
groups too); what involves two keys is checked by :meth:`RulesConfig.check`.

>>> from stagekit.config import loads
>>> class Cfg(msgspec.Struct, frozen=True):
...     rules: RulesConfig = RulesConfig()
>>> cfg = loads(Cfg, '''
... [rules]
... threshold_high_c = 8.0
... [rules.groups.freezers]
... sites = ["s1"]
... threshold_high_c = -15.0
... ''')
>>> cfg.rules.for_device("s1-d01", "s1").threshold_high_c, cfg.rules.groups["freezers"].overrides()
(-15.0, {'threshold_high_c': -15.0})
>>> try:
...     loads(Cfg, "[rules.groups.freezers]\\nsites = ['s1']\\nthresold_high_c = 1.0\\n")
... except ValueError as exc:
...     print(str(exc).split(" (")[0])
rules.groups.freezers.thresold_high_c: unknown key
>>> loads(Cfg, "[rules]\\noutlier_min_peers = 2\\n")
Traceback (most recent call last):
...
stagekit.config.ConfigError: rules.outlier_min_peers: must be at least 3, got 2
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import msgspec

__all__ = ["AlertSettings", "RuleGroup", "RuleSettings", "RulesConfig"]

#: Durations, windows and limits that only make sense above zero / from zero.
Positive = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class RuleSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Fleet rule parameters (null disables a threshold)."""

    threshold_high_c: float | None = None
    critical_high_c: float | None = None
    threshold_low_c: float | None = None
    critical_low_c: float | None = None
    #: A threshold alert clears only this far back inside the limit.
    hysteresis_c: NonNegative = 1.0
    #: The limit must be crossed for this long (event time) before opening.
    min_duration_s: NonNegative = 60.0
    #: Rate of change limit in °C per minute over ``rate_window_s``.
    rate_max_c_per_min: Positive | None = None
    rate_clear_c_per_min: NonNegative | None = None
    rate_window_s: Positive = 60.0
    #: No reading for this long (processing time): stale sensor.
    stale_after_s: Positive = 300.0
    #: Fleet outlier: robust z-score among the site's devices in the window.
    outlier_z: Positive = 4.0
    outlier_clear_z: NonNegative = 2.5
    #: Fewer than 3 peers have no meaningful median absolute deviation.
    outlier_min_peers: Annotated[int, msgspec.Meta(ge=3)] = 4
    outlier_window_s: Positive = 120.0
    #: Floor of the MAD (°C) so that identical peers do not make z infinite.
    outlier_min_mad_c: Positive = 0.25
    #: Sensor-fault storm: this many non-ok readings within the window.
    fault_storm_count: Annotated[int, msgspec.Meta(ge=1)] = 5
    fault_storm_window_s: Positive = 60.0

    def memory_s(self) -> float:
        """The longest stretch of processing or event time a rule looks back over."""
        return max(
            self.stale_after_s, self.rate_window_s, self.outlier_window_s, self.fault_storm_window_s
        )


#: The keys a group can override: every rule parameter.
_OVERRIDABLE: Final = RuleSettings.__struct_fields__


class _GroupMembers(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Who a group applies to (the rule keys are added from :class:`RuleSettings`)."""

    sites: list[str] = msgspec.field(default_factory=list)
    devices: list[str] = msgspec.field(default_factory=list)

    def overrides(self) -> dict[str, Any]:
        """The rule settings this group sets (unset keys keep the default)."""
        return {name: value for name in _OVERRIDABLE if (value := getattr(self, name)) is not None}


if TYPE_CHECKING:

    class RuleGroup(_GroupMembers, frozen=True):
        """Overrides for some sites and/or devices (unset keys keep the default)."""

        def __init__(
            self, *, sites: list[str] = ..., devices: list[str] = ..., **overrides: Any
        ) -> None: ...

        def __getattr__(self, name: str) -> Any: ...

else:
    # Every RuleSettings key, optional (None = not set by this group), with
    # the same type and range: declared once, refined per group.
    RuleGroup = msgspec.defstruct(
        "RuleGroup",
        [(f.name, f.type | None, None) for f in msgspec.structs.fields(RuleSettings)],
        bases=(_GroupMembers,),
        module=__name__,
        frozen=True,
        forbid_unknown_fields=True,
        omit_defaults=True,
    )
    RuleGroup.__doc__ = "Overrides for some sites and/or devices (unset keys keep the default)."


class RulesConfig(RuleSettings, frozen=True, forbid_unknown_fields=True):
    """Default rule settings plus named groups of overrides."""

    groups: dict[str, RuleGroup] = msgspec.field(default_factory=dict)
    #: Reorder stage (fleet-wide, not per group): a reading that overtook a
    #: lower seq of its device waits at most this long (processing time) for
    #: the missing seqs before the rules see it anyway; 0 disables waiting.
    reorder_wait_ms: int = 200
    #: Readings held for reordering, at most, over all devices and per device
    #: (when full, the oldest hole is given up and its device's readings released).
    reorder_max_held: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    reorder_max_held_per_device: int = 64
    #: Devices whose rule state is kept, compacted ones included (fleet-wide):
    #: beyond it the device heard from longest ago is given up (a fleet of
    #: 100,000 fits on one processor).
    max_devices: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 100_000
    #: A device heard nothing from for this long (processing time) is
    #: compacted: its rule state becomes a small record, rebuilt exactly when
    #: it is heard from again; its open alerts stay open (``FleetRules.evict``).
    device_idle_s: Annotated[float, msgspec.Meta(ge=60, le=365 * 86_400)] = 900.0
    #: Where compacted devices' records go: "" keeps them in memory (a few
    #: hundred bytes per idle device); a directory puts them in an SQLite file
    #: there, deleted at exit (``cloud_processor/spill.py``).
    state_spill_dir: str = ""

    def for_device(self, device_id: str, site: str) -> RuleSettings:
        """Effective settings of one device: defaults, then site groups, then device groups.

        Later groups win over earlier ones, device matches over site matches.
        """
        values: dict[str, Any] = {name: getattr(self, name) for name in _OVERRIDABLE}
        for group in self.groups.values():
            if site in group.sites:
                values.update(group.overrides())
        for group in self.groups.values():
            if device_id in group.devices:
                values.update(group.overrides())
        return RuleSettings(**values)

    def longest_stale_s(self) -> float:
        """The longest ``stale_after_s`` of the defaults and every group.

        >>> RulesConfig(stale_after_s=60, groups={"cold": RuleGroup(sites=["c"],
        ...     stale_after_s=600)}).longest_stale_s()
        600.0
        """
        every = [self.stale_after_s]
        every += [g.overrides().get("stale_after_s", 0.0) for g in self.groups.values()]
        return float(max(every))

    def check(self, where: str = "rules") -> list[str]:
        """Problems that involve more than one key, as ``<where>.key: problem``."""
        problems: list[str] = []
        high, low = self.threshold_high_c, self.threshold_low_c
        if high is not None and low is not None and low >= high:
            problems.append(
                f"{where}.threshold_low_c: must be below threshold_high_c ({high}), got {low}"
            )
        if self.outlier_clear_z > self.outlier_z:
            problems.append(
                f"{where}.outlier_clear_z: must not exceed outlier_z ({self.outlier_z}), "
                f"got {self.outlier_clear_z}"
            )
        if not 0 <= self.reorder_wait_ms <= 60_000:
            problems.append(
                f"{where}.reorder_wait_ms: must be between 0 and 60000, got {self.reorder_wait_ms}"
            )
        if not 1 <= self.reorder_max_held_per_device <= self.reorder_max_held:
            problems.append(
                f"{where}.reorder_max_held_per_device: must be between 1 and "
                f"reorder_max_held ({self.reorder_max_held}), "
                f"got {self.reorder_max_held_per_device}"
            )
        defaults = {name: getattr(self, name) for name in _OVERRIDABLE}
        longest = max(
            RuleSettings(**{**defaults, **overrides}).memory_s()
            for overrides in [{}, *(g.overrides() for g in self.groups.values())]
        )
        if self.device_idle_s < longest:
            problems.append(
                f"{where}.device_idle_s: must be at least the longest rule window or "
                f"stale_after_s ({longest:g} s), got {self.device_idle_s:g}"
            )
        spill = self.state_spill_dir
        if spill and not (Path(spill).is_dir() and os.access(spill, os.W_OK | os.X_OK)):
            problems.append(f"{where}.state_spill_dir: not a writable directory: {spill!r}")
        for name, group in self.groups.items():
            if not group.sites and not group.devices:
                problems.append(f"{where}.groups.{name}: lists neither sites nor devices")
        return problems


class AlertSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Alert lifecycle: lateness, flapping."""

    #: An event older than the newest event time seen minus this is late.
    allowed_lateness_s: NonNegative = 120.0
    #: An event older than processing time minus this is late too (a backlog
    #: replayed after an outage, or ``processor replay``).
    max_event_age_s: NonNegative = 600.0
    #: An alert that opened this many times within ``flap_window_s`` is flapping.
    flap_max_opens: Annotated[int, msgspec.Meta(ge=1)] = 3
    flap_window_s: NonNegative = 900.0
    #: A flapping alert resolves only after its clear condition held this long.
    flap_hold_s: NonNegative = 300.0
    #: Resolved alerts loaded at start (to recognise replayed changes).
    restore_resolved_s: NonNegative = 86_400.0

"""The demo's script of incidents, as data: which device gets what, when.

:func:`plan` is pure: given the sites, their devices and the demo duration
it says which device gets which incident when (a freezer door left open, a
fire-like rise, a stuck probe, a device whose agent dies, a burst of
malformed payloads), as offsets in seconds from the start.
:class:`~thermowatch.demo.fleet.DemoFleet` plays the simulator's part of it,
:mod:`thermowatch.demo.scenario` the rest.

>>> p = plan({"s1": ["s1-d01", "s1-d02", "s1-d03"], "s2": ["s2-d01", "s2-d02"],
...           "s3": ["s3-d01", "s3-d02"]}, 100.0)
>>> for i in p.incidents:
...     print(i.kind, i.device_id, i.start_s, i.duration_s)
door_open s1-d03 20.0 30.0
stuck s2-d01 20.0 60.0
fire s3-d01 35.0 20.0
>>> p.offline_device, p.offline_at_s, p.online_at_s, p.malformed_device, p.malformed_at_s
('s3-d02', 45.0, 70.0, 's2-d02', 55.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["SITE_KINDS", "FleetPlan", "PlannedIncident", "SiteKind", "plan", "steady_plan"]

#: Sites in order: freezers, cold rooms, ambient rooms (base temperatures in °C).
SiteKind = tuple[str, float]
SITE_KINDS: tuple[SiteKind, ...] = (("freezer", -20.0), ("cold_room", 4.0), ("ambient", 21.0))


@dataclass(frozen=True, slots=True)
class PlannedIncident:
    """A simulator incident on one device (offsets in seconds from the start)."""

    kind: str
    device_id: str
    site: str
    start_s: float
    duration_s: float
    magnitude_c: float

    @property
    def label_end_s(self) -> float:
        """When the ground truth says it is over (a freezer needs as long again to recover)."""
        tail = self.duration_s if self.kind == "door_open" else 0.0
        return self.start_s + self.duration_s + tail


@dataclass(frozen=True, slots=True)
class FleetPlan:
    """What happens when, for one demo run."""

    sites: Mapping[str, Sequence[str]]
    base_c: Mapping[str, float]
    duration_s: float
    incidents: tuple[PlannedIncident, ...]
    offline_device: str
    offline_at_s: float
    online_at_s: float
    malformed_device: str
    malformed_at_s: float
    #: The edge reports a probe as ``stuck`` after this many identical readings.
    stuck_after: int = 10
    devices: tuple[str, ...] = field(default=())

    def site_of(self, device_id: str) -> str:
        for site, devs in self.sites.items():
            if device_id in devs:
                return site
        raise KeyError(device_id)


def plan(sites: Mapping[str, Sequence[str]], duration_s: float) -> FleetPlan:
    """The incident script for ``sites`` (at least 3 sites of 2 devices) over ``duration_s``.

    Sites get, in order, freezer (-20 °C), cold-room (4 °C) and ambient (21 °C)
    temperatures. The freezer failure hits site 1, the stuck probe site 2, the
    fire and the offline agent the last site, the malformed burst is published
    under the last device of site 2.
    """
    names = list(sites)
    if len(names) < 3 or any(len(sites[s]) < 2 for s in names):
        raise ValueError("the demo plan needs at least 3 sites of 2 devices")
    d = float(duration_s)
    freezer, cold, hot = names[0], names[1], names[-1]

    def at(fraction: float) -> float:
        return round(fraction * d, 3)

    def pick(site: str, i: int) -> str:
        devs = sites[site]
        return devs[i % len(devs)]

    offline = sites[hot][-1]
    fire_dev = pick(hot, 4)
    if fire_dev == offline:
        fire_dev = sites[hot][0]
    stuck_dev = pick(cold, 6)
    malformed = sites[cold][-1]
    if malformed == stuck_dev:
        stuck_dev = sites[cold][0]
    incidents = (
        PlannedIncident("door_open", pick(freezer, 2), freezer, at(0.2), at(0.3), 25.0),
        PlannedIncident("stuck", stuck_dev, cold, at(0.2), at(0.6), 0.0),
        PlannedIncident("fire", fire_dev, hot, at(0.35), at(0.2), 40.0),
    )
    base = {s: SITE_KINDS[min(i, 2)][1] for i, s in enumerate(names)}
    base[hot] = SITE_KINDS[2][1]
    return FleetPlan(
        sites={s: tuple(v) for s, v in sites.items()},
        base_c=base,
        duration_s=d,
        incidents=incidents,
        offline_device=offline,
        offline_at_s=at(0.45),
        online_at_s=at(0.7),
        malformed_device=malformed,
        malformed_at_s=at(0.55),
        devices=tuple(dev for devs in sites.values() for dev in devs),
    )


def steady_plan(sites: Mapping[str, Sequence[str]], duration_s: float = 3600.0) -> FleetPlan:
    """A plan with no scripted incident and no killable agent: faults and incidents
    are injected by the caller (the chaos tests), incidents with :meth:`DemoFleet.force`.

    Base temperatures as in :func:`plan` (freezer, cold room, then ambient sites).

    >>> p = steady_plan({"s1": ["s1-d01"], "s2": ["s2-d01"], "s3": ["s3-d01", "s3-d02"]})
    >>> p.incidents, p.offline_device, p.devices, dict(p.base_c)
    ((), '', ('s1-d01', 's2-d01', 's3-d01', 's3-d02'), {'s1': -20.0, 's2': 4.0, 's3': 21.0})
    """
    names = list(sites)
    return FleetPlan(
        sites={s: tuple(v) for s, v in sites.items()},
        base_c={s: SITE_KINDS[min(i, 2)][1] for i, s in enumerate(names)},
        duration_s=float(duration_s),
        incidents=(),
        offline_device="",
        offline_at_s=0.0,
        online_at_s=0.0,
        malformed_device="",
        malformed_at_s=0.0,
        devices=tuple(dev for devs in sites.values() for dev in devs),
    )

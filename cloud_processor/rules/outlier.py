"""Fleet outlier: a device far from its site's other devices (robust z-score).

Judged once per batch (:meth:`FleetOutlier.on_tick`) for every site that got
a new temperature since the last tick, rather than per reading, so the
verdict does not depend on how the site's devices interleave across Kafka
partitions: each device's latest temperature is compared with the latest
temperatures of the site's devices within ``outlier_window_s`` of the site's
newest one (median and MAD; at least ``outlier_min_peers`` of them). Opens at
``|z| >= outlier_z``, clears at ``|z| <= outlier_clear_z``. A blip shorter
than one batch during a catch-up can go unseen.

>>> from cloud_processor.rules.lifecycle import AlertBook
>>> from cloud_processor.rules.settings import AlertSettings, RuleSettings
>>> rule = FleetOutlier(AlertBook(AlertSettings()))
>>> fleet = {}
>>> for name, temp in {"a": 4.0, "b": 4.2, "c": 3.9, "d": 4.1, "e": 12.0}.items():
...     fleet[name] = Device(name, "s1", RuleSettings(), last_ts=1_000, last_temp=temp)
...     _ = rule.on_temperature(fleet[name], 1_000, temp)
>>> [(v.signal.device_id, v.signal.score, v.late) for v in rule.on_tick(fleet, 1_000, 0)]
[('e', 21.314, False)]
>>> rule.on_tick(fleet, 2_000, 0)    # nothing new since the last tick
[]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from cloud_processor.rules.base import Device, FleetRule, Verdict
from cloud_processor.rules.lifecycle import AlertBook, Signal
from telemetry_contract import Rule

__all__ = ["FleetOutlier", "robust_z"]

#: MAD * 1/0.6745 estimates the standard deviation of normally distributed values.
_MAD_TO_SIGMA: Final = 0.6745


def _median(ordered: list[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def robust_z(value: float, peers: list[float], min_mad: float) -> float:
    """Robust z-score of ``value`` among ``peers`` (median and MAD).

    >>> round(robust_z(10.0, [4.0, 4.5, 5.0, 5.5, 10.0], min_mad=0.1), 2)
    6.75
    >>> robust_z(4.0, [4.0, 4.0, 4.0], min_mad=0.25)
    0.0
    """
    median, mad = _center(peers, min_mad)
    return _MAD_TO_SIGMA * (value - median) / mad


def _center(peers: list[float], min_mad: float) -> tuple[float, float]:
    """Median and MAD (at least ``min_mad``) of ``peers``."""
    median = _median(sorted(peers))
    return median, max(_median(sorted(abs(p - median) for p in peers)), min_mad)


class FleetOutlier(FleetRule):
    """``fleet_outlier``: see the module doc."""

    def __init__(self, alerts: AlertBook) -> None:
        super().__init__(alerts)
        #: site -> ids of its devices that have a temperature.
        self._members: dict[str, set[str]] = {}
        #: Sites with a new temperature since the last tick.
        self._dirty: set[str] = set()

    def forget(self, device_id: str, site: str) -> None:
        members = self._members.get(site)
        if members is not None:
            members.discard(device_id)
            if not members:
                del self._members[site]
                self._dirty.discard(site)

    def park(self, device_id: str, site: str) -> Any:
        member = device_id in self._members.get(site, ())
        self.forget(device_id, site)
        return 1 if member else None

    def unpark(self, device: Device, state: Any) -> None:
        # A peer of its site again (its last temperature is back with it);
        # nothing new to judge, so the site is not marked dirty.
        self._members.setdefault(device.site, set()).add(device.device_id)

    def on_temperature(self, device: Device, ts: int, temp_c: float) -> Signal | None:
        members = self._members.get(device.site)
        if members is None:
            members = self._members[device.site] = set()
        members.add(device.device_id)
        self._dirty.add(device.site)
        return None

    def on_tick(self, devices: Mapping[str, Device], now_ms: int, watermark: int) -> list[Verdict]:
        out: list[Verdict] = []
        for site in sorted(self._dirty):
            members = [devices[i] for i in sorted(self._members[site])]
            latest = [
                (d, d.last_ts, d.last_temp)
                for d in members
                if d.last_ts is not None and d.last_temp is not None
            ]
            if latest:
                out += self._judge_site(latest, watermark)
        self._dirty.clear()
        return out

    def _judge_site(self, latest: list[tuple[Device, int, float]], watermark: int) -> list[Verdict]:
        """``latest``: each member's latest (event time, temperature)."""
        out: list[Verdict] = []
        newest = max(ts for _, ts, _ in latest)
        # Devices with the same window share their peers: their median and MAD
        # are computed once per site and tick, not once per device (sorting
        # every peer for every device made a tick quadratic in the site's size).
        centers: dict[tuple[int, float], tuple[int, float, float]] = {}
        for device, ts, temp_c in latest:
            settings = device.settings
            horizon = newest - int(settings.outlier_window_s * 1000)
            if ts < horizon:
                continue
            key = (horizon, settings.outlier_min_mad_c)
            center = centers.get(key)
            if center is None:
                peers = [peer_temp for _, peer_ts, peer_temp in latest if peer_ts >= horizon]
                center = centers[key] = (len(peers), *_center(peers, key[1]))
            if center[0] < settings.outlier_min_peers:
                continue
            signal = self._signal(device, ts, temp_c, center)
            if signal is not None:
                out.append(Verdict(signal, late=ts < watermark))
        return out

    def _signal(
        self, device: Device, ts: int, temp_c: float, center: tuple[int, float, float]
    ) -> Signal | None:
        """``center``: the number of peers, their median and MAD."""
        settings = device.settings
        count, median, mad = center
        z = _MAD_TO_SIGMA * (temp_c - median) / mad  # as robust_z computes it
        if abs(z) >= settings.outlier_z:
            return device.signal(
                Rule.OUTLIER,
                active=True,
                ts=ts,
                value=temp_c,
                score=round(abs(z), 3),
                threshold=settings.outlier_z,
                message=f"{temp_c} °C is {z:+.1f} robust SDs from the site median "
                f"({count} devices)",
            )
        if abs(z) > settings.outlier_clear_z:
            return None
        if self.alerts.active(device.device_id, Rule.OUTLIER) is None:
            return None
        return device.signal(
            Rule.OUTLIER,
            active=False,
            ts=ts,
            value=temp_c,
            score=round(abs(z), 3),
            message=f"z {z:+.1f} back within {settings.outlier_clear_z:g}",
        )

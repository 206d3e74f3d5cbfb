"""The web view's pure core: fold readings, device status and alerts into a view.

:class:`FleetView` holds what the page shows -- each device's recent readings
(the sparkline), its last status message and the open alerts -- and turns it
into JSON-ready dictionaries: a full :meth:`FleetView.snapshot` for a new page
and a :meth:`FleetView.delta` of what changed since the previous delta for the
open event streams. It does no I/O and reads no clock: callers pass ``now_ms``.

Every input may arrive twice and in any order, because the same facts come
from two places (the search server's documents and the Kafka topics):
readings are kept once per ``(device, seq)``, a status older than the one held
is ignored, and an alert change replaces the held one only if its ``version``
is newer, so a replayed ``opened`` never reopens a resolved alert. Alerts are
the contract's :class:`~telemetry_contract.Alert` (changes decoded with
:func:`~telemetry_contract.decode_alert_change`, documents read with
:func:`stagekit.search.alerts.alert_from_doc`), shown as :class:`AlertView`.

A device is *offline* when its newest status says so (the MQTT last will; only
a newer ``online`` status undoes it, as in the processor), when the processor
holds a ``device_offline`` alert for it, or when it has sent no reading for
``offline_after_s`` (event time of its newest reading). A device that went
offline announced -- its status reason is ``shutdown`` or ``maintenance``, or
its offline alert has info severity -- is in that informational state instead
(:data:`ANNOUNCED`): not offline-red, and not among the incidents.

Incidents (the processor's groups of alerts, :mod:`thermowatch.web.incidents`)
are folded by the same rules and listed first: open ones, then recently
resolved ones; each alert row names the open incident it belongs to.

>>> v = FleetView(sparkline_points=3, offline_after_s=60)
>>> t0 = 1_767_225_600_000
>>> for seq, temp in enumerate([4.0, 4.5, 5.0, 5.5], start=1):
...     _ = v.add_reading("s1-d01", "s1", seq, t0 + seq * 1000, temp, "ok")
>>> d = v.snapshot(t0 + 5000)["devices"][0]
>>> d["temp_c"], d["spark"], d["state"]
(5.5, [4.5, 5.0, 5.5], 'online')
>>> v.snapshot(t0 + 120_000)["devices"][0]["state"]      # silent for two minutes
'offline'
>>> v.on_alert({"alert_id": "a1", "device_id": "s1-d01", "site": "s1",
...             "rule": "threshold_high", "severity": "critical", "status": "open",
...             "version": 1, "opened_at": t0, "updated_at": t0,
...             "message": "temp_c 9.5 >= 8.0"}, now_ms=t0)
True
>>> [a["alert_id"] for a in v.snapshot(t0)["alerts"]]
['a1']
>>> v.on_alert({"alert_id": "a1", "device_id": "s1-d01", "site": "s1", "rule": "threshold_high",
...             "severity": "critical", "status": "resolved", "version": 2,
...             "opened_at": t0, "updated_at": t0 + 9000}, now_ms=t0)
True
>>> v.snapshot(t0)["alerts"]
[]
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from stagekit.ratelog import RateLimitedLog
from telemetry_contract import (
    ContractError,
    DeviceState,
    DeviceStatus,
    Reading,
    Rule,
    Severity,
    decode,
    decode_alert_change,
    printable,
)
from thermowatch.web.alerts import AlertView
from thermowatch.web.incidents import IncidentBook, IncidentView

__all__ = ["ANNOUNCED", "AlertView", "FleetView", "fold_record"]

log = logging.getLogger(__name__)

SEVERITY_RANK: Final = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
#: Resolved alerts are remembered this long (so an older copy cannot reopen them).
_TOMBSTONE_MS: Final = 3_600_000
#: Offline status reasons of a device that announced it (the reason's first word, as the
#: processor reads it): the state the page shows instead of offline.
ANNOUNCED: Final = frozenset({"shutdown", "maintenance"})


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(slots=True)
class _Device:
    device_id: str
    site: str
    #: (ts, seq, temp_c, quality), sorted; at most ``sparkline_points``.
    points: list[tuple[int, int, float | None, str]] = field(default_factory=list)
    status_state: str | None = None
    status_ts: int = -1
    status_reason: str = ""
    #: (state, reason) last sent in a delta, to notice a device going silent.
    sent_state: tuple[str, str] | None = None


@dataclass(slots=True)
class _HeldAlert:
    view: AlertView
    #: Processing time of the last change folded in (grace before dropping it).
    touched_ms: int


class FleetView:
    """Devices, their recent readings and status, and the alerts; see the module doc."""

    def __init__(
        self,
        *,
        sparkline_points: int = 60,
        offline_after_s: float = 120.0,
        alert_grace_s: float = 30.0,
        max_devices: int = 500,
        max_alerts: int = 200,
        max_resolved_incidents: int = 20,
        devices: Iterable[str] = (),
    ) -> None:
        self._points = sparkline_points
        self._offline_ms = int(offline_after_s * 1000)
        self._grace_ms = int(alert_grace_s * 1000)
        self._max_devices = max_devices
        self._max_alerts = max_alerts
        #: Only these devices are shown (empty: every device).
        self._only = frozenset(devices)
        self._devices: dict[str, _Device] = {}
        self._alerts: dict[str, _HeldAlert] = {}
        self._dirty: set[str] = set()
        self._alerts_dirty = False
        #: The processor's incidents (the open ones listed first on the page).
        self.incidents = IncidentBook(
            max_open=max_alerts, max_resolved=max_resolved_incidents, grace_s=alert_grace_s
        )
        #: Incremented by every change (the JSON snapshot carries it).
        self.version = 0

    # -- folding inputs --------------------------------------------------------

    def shows(self, device_id: str) -> bool:
        """Whether ``device_id`` belongs on the page (every device, unless ``devices`` was given).

        >>> v = FleetView(devices=["s1-d01"])
        >>> v.shows("s1-d01"), v.shows("bench-1")
        (True, False)
        >>> v.add_reading("bench-1", "lab", 1, 1000, 20.0, "ok"), v.device_ids()
        (False, [])
        """
        return not self._only or device_id in self._only

    def _device(self, device_id: str, site: str) -> _Device | None:
        d = self._devices.get(device_id)
        if d is None:
            if not self.shows(device_id) or len(self._devices) >= self._max_devices:
                return None
            d = self._devices[device_id] = _Device(device_id, site)
        elif site and not d.site:
            d.site = site
        return d

    def _touch(self, device_id: str) -> None:
        self._dirty.add(device_id)
        self.version += 1

    def add_reading(
        self,
        device_id: str,
        site: str,
        seq: int,
        ts: int,
        temp_c: float | None,
        quality: str,
    ) -> bool:
        """Fold one reading; False when it is already held, too old or over the cap.

        >>> v = FleetView(sparkline_points=2)
        >>> v.add_reading("d", "s", 2, 2000, 5.0, "ok"), v.add_reading("d", "s", 2, 2000, 5.0, "ok")
        (True, False)
        >>> v.add_reading("d", "s", 3, 3000, 6.0, "ok"), v.add_reading("d", "s", 1, 1000, 1.0, "ok")
        (True, False)
        """
        d = self._device(device_id, site)
        if d is None:
            return False
        point = (ts, seq, temp_c, quality)
        pts = d.points
        if any(p[1] == seq for p in pts):
            return False
        if len(pts) >= self._points and point <= pts[0]:
            return False  # older than everything kept
        bisect.insort(pts, point)
        if len(pts) > self._points:
            del pts[: len(pts) - self._points]
        self._touch(device_id)
        return True

    def on_reading(self, r: Reading) -> bool:
        """Fold a contract :class:`~telemetry_contract.Reading` (from the telemetry topic)."""
        return self.add_reading(r.device_id, r.site, r.seq, r.ts, r.temp_c, r.quality.value)

    def on_reading_doc(self, doc: Mapping[str, Any]) -> bool:
        """Fold a readings-index document; False for one missing a field.

        >>> FleetView().on_reading_doc({"device_id": "d", "site": "s", "seq": 1,
        ...     "@timestamp": 1000, "temp_c": 4.5, "quality": "ok"})
        True
        """
        try:
            return self.add_reading(
                str(doc["device_id"]),
                str(doc.get("site") or ""),
                int(doc["seq"]),
                int(doc["@timestamp"]),
                _float(doc.get("temp_c")),
                str(doc.get("quality") or "ok"),
            )
        except (KeyError, TypeError, ValueError):
            return False

    def on_status(self, st: DeviceStatus) -> bool:
        """Fold a device status; an older one than held is ignored.

        >>> from telemetry_contract import DeviceStatus, DeviceState
        >>> v = FleetView()
        >>> v.on_status(DeviceStatus(device_id="d", site="s", ts=2000,
        ...                          state=DeviceState.OFFLINE, reason="lwt"))
        True
        >>> v.on_status(DeviceStatus(device_id="d", site="s", ts=1000, state=DeviceState.ONLINE))
        False
        >>> v.snapshot(2000)["devices"][0]["state_reason"]
        'status offline: lwt'
        """
        d = self._device(st.device_id, st.site)
        if d is None:
            return False
        offline = st.state is DeviceState.OFFLINE
        # The last will carries the ts of the online status of its connection.
        if st.ts < d.status_ts or (st.ts == d.status_ts and not offline):
            return False
        was = _announced(d)
        d.status_state = "offline" if offline else "online"
        d.status_ts = st.ts
        d.status_reason = st.reason
        if _announced(d) != was:
            self._alerts_dirty = True  # its offline alert turns informational, or back
        self._touch(st.device_id)
        return True

    def on_alert(self, doc: Mapping[str, Any] | AlertView, *, now_ms: int) -> bool:
        """Fold an alert (a document or change as data, or parsed) if it is newer than the
        one held: a higher version, or the same version newly acknowledged."""
        view = doc if isinstance(doc, AlertView) else AlertView.from_doc(doc)
        if view is None or not self.shows(view.alert.device_id):
            return False
        a = view.alert
        held = self._alerts.get(a.alert_id)
        if held is not None:
            old = held.view
            newer = a.version > old.alert.version or (
                a.version == old.alert.version and view.acknowledged and not old.acknowledged
            )
            if not newer:
                return False
        self._alerts[a.alert_id] = _HeldAlert(view, now_ms)
        if held is None and not view.is_open:
            return False  # resolved before we saw it: remembered only as a tombstone
        self._device(a.device_id, a.site)
        self._alerts_dirty = True
        self._touch(a.device_id)
        return True

    def sync_alerts(self, open_docs: Iterable[Mapping[str, Any]], *, now_ms: int) -> int:
        """Make the open alerts match the search server's list; returns changes.

        An alert held open but absent from ``open_docs`` is dropped once its
        last change is older than ``alert_grace_s`` (it was resolved, or it is
        so new that the search server does not show it yet).

        >>> v = FleetView(alert_grace_s=10)
        >>> doc = {"alert_id": "a", "device_id": "d", "site": "s", "rule": "r",
        ...        "severity": "warning", "status": "open", "version": 1,
        ...        "opened_at": 0, "updated_at": 0}
        >>> v.sync_alerts([doc], now_ms=0), len(v.snapshot(0)["alerts"])
        (1, 1)
        >>> v.sync_alerts([], now_ms=5_000), v.sync_alerts([], now_ms=11_000)
        (0, 1)
        >>> v.snapshot(11_000)["alerts"]
        []
        """
        changed = 0
        seen: set[str] = set()
        for doc in open_docs:
            view = AlertView.from_doc(doc)
            if view is None:
                continue
            seen.add(view.alert.alert_id)
            changed += self.on_alert(view, now_ms=now_ms)
        for alert_id, held in list(self._alerts.items()):
            age = now_ms - held.touched_ms
            if held.view.is_open:
                if alert_id not in seen and age > self._grace_ms:
                    del self._alerts[alert_id]
                    self._alerts_dirty = True
                    self._touch(held.view.alert.device_id)
                    changed += 1
            elif age > max(self._grace_ms, _TOMBSTONE_MS):
                del self._alerts[alert_id]
        return changed

    def on_incident(self, doc: Mapping[str, Any] | IncidentView, *, now_ms: int) -> bool:
        """Fold an incident (a document or change as data, or parsed) if its version is newer.

        One whose devices are all off the page (``devices``) is skipped.
        """
        view = self.incidents.parse(doc)
        if view is None or (self._only and self._only.isdisjoint(view.incident.device_ids)):
            return False
        if not self.incidents.fold(view, now_ms=now_ms):
            return False
        self.version += 1
        return True

    def sync_incidents(self, docs: Iterable[Mapping[str, Any]], *, now_ms: int) -> int:
        """Make the incidents match the search server's (see :meth:`IncidentBook.sync`)."""
        mine = [v for v in map(self.incidents.parse, docs) if v is not None]
        if self._only:
            mine = [v for v in mine if not self._only.isdisjoint(v.incident.device_ids)]
        changed = self.incidents.sync(mine, now_ms=now_ms)
        self.version += changed
        return changed

    # -- the view --------------------------------------------------------------

    def open_alerts(self) -> list[AlertView]:
        """Open alerts, most severe first, then newest first (at most ``max_alerts``)."""
        out = [h.view for h in self._alerts.values() if h.view.is_open]
        out.sort(key=_alert_order)
        return out[: self._max_alerts]

    def _state(self, d: _Device, now_ms: int, offline_alert: AlertView | None) -> tuple[str, str]:
        last_ts = d.points[-1][0] if d.points else None
        said = f"status offline: {d.status_reason}" if d.status_reason else "status offline"
        # The device's own announcement wins over a (warning) offline alert made of it.
        announced = _announced(d)
        if announced is not None:
            return announced, said
        if offline_alert is not None:
            message = offline_alert.alert.message or "device offline"
            if offline_alert.alert.severity is Severity.INFO:
                return "shutdown", message  # the processor judged it announced
            return "offline", message
        if d.status_state == "offline":
            # Not undone by a reading: a last will carries the time its connection
            # began, so readings of that very session are newer than it.
            return "offline", said
        if last_ts is None:
            return "offline", "no reading yet"
        silent_s = (now_ms - last_ts) // 1000
        if now_ms - last_ts > self._offline_ms:
            return "offline", f"no reading for {silent_s} s"
        return "online", ""

    def _by_device(self, alerts: list[AlertView]) -> dict[str, list[AlertView]]:
        out: dict[str, list[AlertView]] = {}
        for a in alerts:
            out.setdefault(a.alert.device_id, []).append(a)
        return out

    def _device_state(self, d: _Device, now_ms: int, mine: list[AlertView]) -> tuple[str, str]:
        offline_alert = next((a for a in mine if a.alert.rule == Rule.OFFLINE), None)
        return self._state(d, now_ms, offline_alert)

    def _device_json(
        self, d: _Device, state: tuple[str, str], mine: list[AlertView]
    ) -> dict[str, Any]:
        temps = [p for p in d.points if p[2] is not None]
        last = d.points[-1] if d.points else None
        mine = [a for a in mine if not self._informational(a)]  # what to act on
        worst = max((SEVERITY_RANK[a.alert.severity] for a in mine), default=-1)
        return {
            "device_id": d.device_id,
            "site": d.site,
            "temp_c": temps[-1][2] if temps else None,
            "temp_ts": temps[-1][0] if temps else None,
            "ts": last[0] if last else None,
            "seq": last[1] if last else None,
            "quality": last[3] if last else None,
            "spark": [p[2] for p in temps],
            "state": state[0],
            "state_reason": state[1],
            "alerts": len(mine),
            "severity": next((k.value for k, v in SEVERITY_RANK.items() if v == worst), None),
        }

    def snapshot(self, now_ms: int) -> dict[str, Any]:
        """The whole view (``/api/state`` and the first event of a stream)."""
        alerts = self.open_alerts()
        by_device = self._by_device(alerts)
        devices = []
        for d in sorted(self._devices.values(), key=lambda d: (d.site, d.device_id)):
            mine = by_device.get(d.device_id, [])
            devices.append(self._device_json(d, self._device_state(d, now_ms, mine), mine))
        return {
            "now": now_ms,
            "version": self.version,
            "devices": devices,
            "alerts": self._alerts_json(alerts),
            "incidents": self.incidents.open_json(),
            "resolved_incidents": self.incidents.resolved_json(),
        }

    def _informational(self, a: AlertView) -> bool:
        """Info severity, or the offline alert of a device that announced it: not to act on."""
        if a.alert.severity is Severity.INFO:
            return True
        d = self._devices.get(a.alert.device_id)
        return a.alert.rule == Rule.OFFLINE and d is not None and _announced(d) is not None

    def _alerts_json(self, alerts: list[AlertView]) -> list[dict[str, Any]]:
        grouped = self.incidents.incident_of_alerts()
        return [
            a.to_json(grouped.get(a.alert.alert_id), informational=self._informational(a))
            for a in alerts
        ]

    def delta(self, now_ms: int) -> dict[str, Any] | None:
        """What changed since the previous delta (None: nothing).

        ``devices`` lists the changed devices whole (readings, status or an
        offline state reached by silence); ``alerts`` is the whole open list,
        present only when it or the incidents changed; ``incidents`` and
        ``resolved_incidents`` are the whole lists, present only when they changed.

        >>> v = FleetView(offline_after_s=10)
        >>> _ = v.add_reading("d", "s", 1, 0, 4.0, "ok")
        >>> [d["state"] for d in v.delta(1000)["devices"]]
        ['online']
        >>> v.delta(2000) is None
        True
        >>> [d["state"] for d in v.delta(20_000)["devices"]]   # went silent
        ['offline']
        """
        alerts = self.open_alerts()
        by_device = self._by_device(alerts)
        out: list[dict[str, Any]] = []
        for d in self._devices.values():
            mine = by_device.get(d.device_id, [])
            state = self._device_state(d, now_ms, mine)
            if d.device_id in self._dirty or state != d.sent_state:
                d.sent_state = state
                out.append(self._device_json(d, state, mine))
        incidents_changed = self.incidents.dirty
        alerts_changed = self._alerts_dirty or incidents_changed  # rows name their incident
        self._dirty.clear()
        self._alerts_dirty = self.incidents.dirty = False
        if not out and not alerts_changed:
            return None
        delta: dict[str, Any] = {"now": now_ms, "version": self.version, "devices": out}
        if alerts_changed:
            delta["alerts"] = self._alerts_json(alerts)
        if incidents_changed:
            delta["incidents"] = self.incidents.open_json()
            delta["resolved_incidents"] = self.incidents.resolved_json()
        return delta

    def device_ids(self) -> list[str]:
        """Devices in the view, sorted."""
        return sorted(self._devices)


def _announced(d: _Device) -> str | None:
    """``shutdown`` or ``maintenance`` if the device's newest status announced going offline.

    The first word of the reason counts, so ``maintenance: compressor swap`` is
    maintenance (the processor's rule, ``cloud_processor.rules.offline.announced``).
    """
    if d.status_state != "offline":
        return None
    first = d.status_reason.strip().split(":", 1)[0].split(";", 1)[0].split(None, 1)
    word = first[0].lower() if first else ""
    return word if word in ANNOUNCED else None


def _alert_order(a: AlertView) -> tuple[int, int, str]:
    """Most severe first, then newest first."""
    return (-SEVERITY_RANK[a.alert.severity], -a.alert.opened_at, a.alert.alert_id)


#: Warning lines about refused records let through per interval ...
REFUSED_LOG_LINES: Final = 10
#: ... of this many seconds; the next line says how many were held back (``suppressed=N``).
REFUSED_LOG_PER_S: Final = 10.0
#: The budget of callers that bring none (the web app brings its own).
_REFUSED_LOG = RateLimitedLog(lines=REFUSED_LOG_LINES, per_s=REFUSED_LOG_PER_S)


def _skipped(kind: str, exc: ContractError, refused_log: RateLimitedLog | None) -> None:
    (refused_log or _REFUSED_LOG).log(
        log,
        logging.WARNING,
        "event=feed_record_skipped kind=%s reason=%s error=%s",
        printable(kind, 32),
        exc.reason.value,
        printable(str(exc), 1300, quote=True),  # escaped already; quoted: it holds spaces
        key="refused",
    )


def fold_record(
    view: FleetView,
    kind: str,
    payload: bytes | None,
    *,
    now_ms: int,
    refused_log: RateLimitedLog | None = None,
) -> bool:
    """Fold one Kafka record of topic ``kind`` (``alerts``, ``status`` or ``telemetry``).

    Every record is decoded with the contract: readings and device status
    with :func:`telemetry_contract.decode`, alert changes with
    :func:`telemetry_contract.decode_alert_change` (older changes without
    ``type``/``schema_version`` included). Anything that does not decode is
    skipped (False) with one warning line, its text the contract error's
    (escaped and bounded): the processor dead-letters a broken device
    message, and an alert change that does not decode is not the contract's.
    A hostile producer can write thousands of such records a second, so the
    lines are rate-limited: at most :data:`REFUSED_LOG_LINES` per
    :data:`REFUSED_LOG_PER_S` seconds in ``refused_log`` (a budget shared by
    every caller that passes none), the next one saying how many it held back.

    >>> v = FleetView()
    >>> fold_record(v, "telemetry", b'{"type": "reading", "device_id": "d", "sensor_id": "host",'
    ...             b' "site": "s", "seq": 1, "ts": 1767225600000, "temp_c": 4.5}',
    ...             now_ms=1_767_225_600_000)
    True
    >>> fold_record(v, "telemetry", b"not json", now_ms=0)
    False
    >>> fold_record(v, "alerts", b"[]", now_ms=0)
    False
    """
    if not payload:
        return False
    if kind == "alerts":
        try:
            change = decode_alert_change(payload)
        except ContractError as exc:
            _skipped(kind, exc, refused_log)
            return False
        return view.on_alert(AlertView(change.alert), now_ms=now_ms)
    try:
        msg = decode(payload, now_ms=now_ms)
    except ContractError as exc:
        _skipped(kind, exc, refused_log)
        return False
    if isinstance(msg, Reading):
        return view.on_reading(msg)
    if isinstance(msg, DeviceStatus):
        return view.on_status(msg)
    return False  # gaps and edge alerts reach the page through the processor's alerts

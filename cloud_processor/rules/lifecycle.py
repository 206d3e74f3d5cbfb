"""The alert lifecycle: one active alert per (device, rule), opened, updated, resolved.

Rules do not emit alerts; they emit :class:`Signal` verdicts ("the condition
holds" / "its clear condition holds") and :class:`AlertBook` turns them into
``opened`` / ``updated`` / ``resolved`` :class:`AlertChange` records, with
flapping suppression and lateness (late changes are recorded, never notified).
An informational alert (severity ``info``: an announced shutdown) is recorded
and never notified either.

Replays after a restart: alert ids are derived from the opening event
(``device.rule.ts``) and each change carries a version, so re-evaluating the
same records yields the same (alert_id, version) pairs; :meth:`AlertBook.restore`
loads those already stored and the book does not emit them again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from msgspec.structs import astuple, replace

from cloud_processor.rules.settings import AlertSettings
from telemetry_contract import Alert, AlertChange, AlertStatus, ChangeKind, Rule, Severity

__all__ = ["AlertBook", "Signal"]

#: Every rule's name (``Rule.X.value`` is an enum property: slow in a loop per device).
_RULES: Final = tuple(rule.value for rule in Rule)


class Signal(msgspec.Struct, frozen=True, kw_only=True):
    """A rule's verdict for one (device, rule) at event time ``ts``.

    ``active=True``: the condition holds (open or keep open, possibly at a new
    severity); ``active=False``: its explicit clear condition holds.
    ``confirmed``: the severity was raised a level by cloud evidence (an edge
    alert confirmed by a cloud rule); the book remembers it per active alert.
    """

    device_id: str
    site: str
    rule: Rule
    active: bool
    ts: int
    severity: Severity = Severity.WARNING
    value: float | None = None
    threshold: float | None = None
    score: float | None = None
    message: str = ""
    sensor_id: str | None = None
    confirmed: bool = False


@dataclass(slots=True)
class _Active:
    """An open alert and what the book knows about it beyond the document."""

    alert: Alert
    #: Flapping: event time since which its clear condition has held.
    pending_clear_since: int | None = None
    pending_clear_reason: str = ""


class AlertBook:
    """One active alert per (device, rule); opened, updated and resolved by signals.

    Flapping: when a key has opened ``flap_max_opens`` times within
    ``flap_window_s``, its alert is marked flapping (one ``updated`` change)
    and a clear no longer resolves it at once: the clear condition must hold
    for ``flap_hold_s`` (event time) without the condition coming back.

    >>> book = AlertBook(AlertSettings(flap_max_opens=2, flap_hold_s=60))
    >>> def sig(active, ts):
    ...     return Signal(device_id="d1", site="s1", rule=Rule.THRESHOLD_HIGH,
    ...                   active=active, ts=ts, value=9.0)
    >>> [c.kind.value for c in book.apply(sig(True, 1_000), late=False)]
    ['opened']
    >>> [c.kind.value for c in book.apply(sig(False, 2_000), late=False)]
    ['resolved']
    >>> [c.kind.value for c in book.apply(sig(True, 3_000), late=False)]
    ['opened']
    >>> [(c.kind.value, c.alert.flapping) for c in book.apply(sig(False, 4_000), late=False)]
    [('updated', True)]
    >>> book.apply(sig(True, 5_000), late=False) + book.apply(sig(False, 6_000), late=False)
    []
    >>> [c.kind.value for c in book.apply(sig(False, 66_000), late=False)]
    ['resolved']

    A late signal (a backlog) is recorded but not notified; the same condition
    on live data is news:

    >>> book = AlertBook(AlertSettings())
    >>> [(c.kind.value, c.notify) for c in book.apply(sig(True, 1_000), late=True)]
    [('opened', False)]
    >>> [(c.kind.value, c.notify, c.alert.late) for c in book.apply(sig(True, 2_000), late=False)]
    [('updated', True, False)]
    """

    def __init__(self, settings: AlertSettings) -> None:
        self._settings = settings
        self._active: dict[tuple[str, str], _Active] = {}
        #: (device, rule) -> event times of its recent openings (flapping).
        self._opens: dict[tuple[str, str], deque[int]] = {}
        #: device -> alert_id -> highest version already stored/notified (restored state).
        self._known: dict[str, dict[str, int]] = {}
        #: (device, rule) -> event time its last alert resolved.
        self._floor: dict[tuple[str, str], int] = {}
        #: Open alerts of compacted devices (in their records, see :meth:`park`).
        self._parked_open = 0

    @property
    def open_count(self) -> int:
        """Open alerts, those of compacted devices included."""
        return len(self._active) + self._parked_open

    def active(self, device_id: str, rule: str) -> Alert | None:
        """The active alert of (device, rule), if any."""
        entry = self._active.get((device_id, rule))
        return entry.alert if entry else None

    def is_confirmed(self, device_id: str, rule: str) -> bool:
        """Whether the active alert of (device, rule) was raised a level by cloud evidence."""
        entry = self._active.get((device_id, rule))
        return entry is not None and entry.alert.confirmed

    def active_alerts(self) -> list[Alert]:
        """All active alerts."""
        return [entry.alert for entry in self._active.values()]

    def open_rules(self, device_id: str) -> list[str]:
        """The rules of the device's active alerts."""
        return [rule for rule in _RULES if (device_id, rule) in self._active]

    def forget(self, device_id: str) -> None:
        """Drop the device's bookkeeping (openings, resolved floors, known
        versions) but not its active alerts: they stay open and are cleared as
        usual when the device is heard from again."""
        for rule in _RULES:
            self._opens.pop((device_id, rule), None)
            self._floor.pop((device_id, rule), None)
        self._known.pop(device_id, None)

    def devices(self) -> set[str]:
        """Every device the book keeps anything of (not the compacted ones')."""
        keys = set(self._active) | set(self._opens) | set(self._floor)
        return {device for device, _rule in keys} | set(self._known)

    def drop(self, device_id: str, parked: list[Any] | None = None) -> None:
        """Drop everything of the device, its active alerts too, without
        resolving them (another processor owns the device now and restores
        them from the index); ``parked``: its compacted state (from :meth:`park`)."""
        self.forget(device_id)
        for rule in _RULES:
            self._active.pop((device_id, rule), None)
        if parked is not None:
            self._parked_open -= len(parked[3])

    def park(self, device_id: str) -> list[object] | None:
        """Take out everything the book keeps of a device being compacted (its
        open alerts with their pending clears, openings, resolved floors,
        known versions) as plain data (None: nothing). Its open alerts stay
        open -- in the index, and in :attr:`open_count` -- and :meth:`unpark`
        puts them back when the device is heard from again."""
        opens: dict[str, list[int]] = {}
        floors: dict[str, int] = {}
        active: list[list[object]] = []
        for rule in _RULES:
            key = (device_id, rule)
            entry = self._active.pop(key, None)
            if entry is not None:
                since, reason = entry.pending_clear_since, entry.pending_clear_reason
                active.append([list(astuple(entry.alert)), since, reason])
            times = self._opens.pop(key, None)
            if times:
                opens[rule] = list(times)
            floor = self._floor.pop(key, None)
            if floor is not None:
                floors[rule] = floor
        known = self._known.pop(device_id, None)
        if not opens and not floors and not known and not active:
            return None
        self._parked_open += len(active)
        return [opens, floors, known or {}, active]

    def unpark(self, device_id: str, state: list[Any]) -> None:
        """Put back what :meth:`park` took out (as decoded from msgpack),
        merged with what :meth:`restore` may have loaded for the device
        meanwhile (a rebalance): of two versions of an open alert, the newer
        one is kept, the parked one on a tie (it knows its pending clear)."""
        opens, floors, known, active = state
        self._parked_open -= len(active)
        for values, since, reason in active:
            values[4], values[5] = Severity(values[4]), AlertStatus(values[5])
            alert = Alert(*values)
            current = self._active.get(alert.key)
            if current is None or _supersedes(alert, current.alert, on_tie=True):
                self._active[alert.key] = _Active(alert, since, reason)
        for rule, times in opens.items():
            kept = self._opens.setdefault((device_id, rule), deque())
            merged = sorted(set(kept).union(times))
            kept.clear()
            kept.extend(merged)
        for rule, floor in floors.items():
            key = (device_id, rule)
            self._floor[key] = max(floor, self._floor.get(key, floor))
        if known:
            mine = self._known.setdefault(device_id, {})
            for alert_id, version in known.items():
                mine[alert_id] = max(version, mine.get(alert_id, 0))

    def resolve_all(self, device_id: str, *, ts: int, reason: str) -> list[AlertChange]:
        """Resolve every active alert of the device (its state is dropped for
        good: ``max_devices``); recorded and published, not notified."""
        out: list[AlertChange] = []
        for rule in self.open_rules(device_id):
            current = self._active.pop((device_id, rule))
            before = current.alert
            resolved = _resolved(before, max(ts, before.updated_at), reason, before.late)
            out.append(AlertChange(ChangeKind.RESOLVED, resolved, notify=False))
        return out

    def restore(self, alerts: Iterable[Alert]) -> None:
        """Load stored alerts (open ones become active again) after a restart."""
        touched: set[tuple[str, str]] = set()
        for alert in alerts:
            key = alert.key
            known = self._known.setdefault(alert.device_id, {})
            known[alert.alert_id] = max(alert.version, known.get(alert.alert_id, 0))
            if alert.status is AlertStatus.RESOLVED:
                end = alert.resolved_at if alert.resolved_at is not None else alert.updated_at
                self._floor[key] = max(end, self._floor.get(key, end))
            if alert.status is AlertStatus.OPEN:
                current = self._active.get(key)
                if current is None or _supersedes(alert, current.alert, on_tie=False):
                    self._active[key] = _Active(alert)
            opens = self._opens.setdefault(key, deque())
            if alert.opened_at not in opens:  # restore runs again after each rebalance
                opens.append(alert.opened_at)
                touched.add(key)
        for key in touched:  # only these: it is called a chunk at a time
            opens = self._opens[key]
            ordered = sorted(opens)
            opens.clear()
            opens.extend(ordered)

    def apply(self, signal: Signal, *, late: bool) -> list[AlertChange]:
        """Apply one signal; return the resulting changes (usually none)."""
        key = (signal.device_id, signal.rule.value)
        current = self._active.get(key)
        if current is not None and signal.ts < current.alert.updated_at:
            # Older than the alert's last change: already accounted for (a
            # record replayed after a restart, or a backlog still catching up).
            return []
        if current is None and signal.ts <= self._floor.get(key, -1):
            # At or before the end of the key's last resolved alert: that
            # stretch of time has been judged already (a replay must not open
            # a second alert in the middle of a resolved one).
            return []
        if signal.active:
            if current is None:
                return self._emit(self._open(key, signal, late))
            return self._emit(self._keep(current, signal, late))
        if current is None:
            return []
        return self._emit(self._clear(current, signal, late))

    # -- transitions -------------------------------------------------------

    def _open(self, key: tuple[str, str], signal: Signal, late: bool) -> list[AlertChange]:
        alert = Alert(
            alert_id=f"{signal.device_id}.{signal.rule.value}.{signal.ts}",
            device_id=signal.device_id,
            site=signal.site,
            rule=signal.rule.value,
            severity=signal.severity,
            status=AlertStatus.OPEN,
            version=1,
            opened_at=signal.ts,
            updated_at=signal.ts,
            value=signal.value,
            threshold=signal.threshold,
            score=signal.score,
            message=signal.message,
            late=late,
            sensor_id=signal.sensor_id,
            confirmed=signal.confirmed,
        )
        self._active[key] = _Active(alert)
        opens = self._opens.setdefault(key, deque())
        opens.append(signal.ts)
        horizon = signal.ts - int(self._settings.flap_window_s * 1000)
        while opens and opens[0] < horizon:
            opens.popleft()
        return [AlertChange(ChangeKind.OPENED, alert, notify=_tells(alert, late))]

    def _keep(self, current: _Active, signal: Signal, late: bool) -> list[AlertChange]:
        current.pending_clear_since = None
        if current.alert.late and not late:
            # A condition first seen in a backlog still holds now: it is news.
            return [self._update(current, signal, late=False)]
        if signal.severity is not current.alert.severity:
            return [self._update(current, signal, late=late)]
        return []

    def _update(self, current: _Active, signal: Signal, *, late: bool) -> AlertChange:
        before = current.alert
        alert = replace(
            before,
            severity=signal.severity,
            version=before.version + 1,
            updated_at=max(before.updated_at, signal.ts),
            value=signal.value if signal.value is not None else before.value,
            threshold=signal.threshold if signal.threshold is not None else before.threshold,
            score=signal.score if signal.score is not None else before.score,
            message=signal.message or before.message,
            # Confirmation goes with the message that says so.
            confirmed=signal.confirmed if signal.message else before.confirmed,
            late=late,
        )
        current.alert = alert
        return AlertChange(ChangeKind.UPDATED, alert, notify=_tells(alert, late))

    def _clear(self, current: _Active, signal: Signal, late: bool) -> list[AlertChange]:
        key = current.alert.key
        out: list[AlertChange] = []
        settings = self._settings
        flapping = (
            current.alert.flapping or len(self._opens.get(key, ())) >= settings.flap_max_opens
        )
        if flapping:
            if not current.alert.flapping:
                marked = replace(
                    current.alert,
                    flapping=True,
                    version=current.alert.version + 1,
                    updated_at=signal.ts,
                )
                current.alert = marked
                out.append(AlertChange(ChangeKind.UPDATED, marked, notify=_tells(marked, late)))
            if current.pending_clear_since is None:
                current.pending_clear_since = signal.ts
                current.pending_clear_reason = signal.message
            if signal.ts - current.pending_clear_since < settings.flap_hold_s * 1000:
                return out
        reason = current.pending_clear_reason if flapping else signal.message
        before = current.alert
        resolved = _resolved(before, signal.ts, reason or signal.message, before.late or late)
        del self._active[key]
        self._floor[key] = max(signal.ts, self._floor.get(key, signal.ts))
        notify = _tells(before, late or before.late)
        out.append(AlertChange(ChangeKind.RESOLVED, resolved, notify=notify))
        return out

    def _emit(self, changes: list[AlertChange]) -> list[AlertChange]:
        """Drop changes already stored before a restart (same id and version)."""
        if not self._known:
            return changes
        return [
            c
            for c in changes
            if c.alert.version > self._known.get(c.alert.device_id, {}).get(c.alert.alert_id, 0)
        ]


def _supersedes(alert: Alert, current: Alert, *, on_tie: bool) -> bool:
    """Whether ``alert`` is a newer state of (device, rule) than ``current``:
    a higher version of the same alert, or an alert opened later."""
    if current.alert_id == alert.alert_id:
        if current.version == alert.version:
            return on_tie
        return current.version < alert.version
    return current.opened_at < alert.opened_at


def _tells(alert: Alert, late: bool) -> bool:
    """Whether a change of ``alert`` is notified: live and more than informational."""
    return not late and alert.severity is not Severity.INFO


def _resolved(alert: Alert, ts: int, reason: str, late: bool) -> Alert:
    """``alert`` resolved at ``ts``: the next version, with why."""
    return replace(
        alert,
        status=AlertStatus.RESOLVED,
        version=alert.version + 1,
        updated_at=ts,
        resolved_at=ts,
        clear_reason=reason,
        late=late,
    )

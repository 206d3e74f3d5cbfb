"""Fleet rules and the alert lifecycle: the processor's pure core.

:class:`FleetRules` turns messages (readings, device status, edge alerts, gaps)
and clock ticks into :class:`AlertChange` records. It does no I/O and reads no
clock: the caller passes processing time ``now_ms``, so a test replays a
crafted sequence and gets the same alerts every time.

Two layers:

* rules decide, per (device, rule), whether a condition *holds* or has
  *cleared* (threshold with hysteresis and minimum duration, rate of change,
  stale sensor, device offline, fleet outlier, edge anomaly confirmation,
  sensor-fault storm, data gap);
* :class:`AlertBook` keeps one active alert per (device, rule) and turns those
  signals into ``opened`` / ``updated`` / ``resolved`` changes, with flapping
  suppression and lateness.

Lateness: an event is *late* when its event time is behind the watermark --
the newest event time seen minus ``allowed_lateness_s`` -- or older than
``now_ms - max_event_age_s`` (a backlog replayed by an edge agent after an
outage, or a ``processor replay``). Late conditions are recorded (the alert
document says ``late: true``) but never notified as new alerts.

Replays after a restart: alert ids are derived from the opening event
(``device.rule.ts``) and each change carries a version, so re-evaluating the
same records yields the same (alert_id, version) pairs; :meth:`AlertBook.restore`
loads those already stored and the book does not emit them again.

>>> from telemetry_contract import Reading
>>> from cloud_processor.config import AlertSettings, RulesConfig
>>> rules = FleetRules(RulesConfig(threshold_high_c=8.0, min_duration_s=0), AlertSettings())
>>> t0 = 1_767_225_600_000
>>> def r(seq, temp):
...     return Reading(device_id="d1", sensor_id="host", site="s1", seq=seq,
...                    ts=t0 + seq * 1000, temp_c=temp)
>>> [(c.kind.value, c.alert.severity.value) for c in rules.on_reading(r(1, 9.0), now_ms=t0)]
[('opened', 'warning')]
>>> rules.on_reading(r(2, 7.5), now_ms=t0)   # inside the hysteresis band: still open
[]
>>> [(c.kind.value, c.alert.clear_reason) for c in rules.on_reading(r(3, 6.9), now_ms=t0)]
[('resolved', 'temp_c 6.9 <= 7 (threshold 8 - hysteresis 1)')]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from msgspec.structs import replace

from cloud_processor.rules.settings import AlertSettings, RulesConfig, RuleSettings
from telemetry_contract import (
    Alert,
    AlertChange,
    AlertState,
    AlertStatus,
    ChangeKind,
    DeviceState,
    DeviceStatus,
    EdgeAlert,
    EdgeAlertKind,
    Gap,
    Quality,
    Reading,
    Rule,
    Severity,
)

__all__ = [
    "Alert",
    "AlertBook",
    "AlertChange",
    "AlertStatus",
    "ChangeKind",
    "FleetRules",
    "Rule",
    "Signal",
    "robust_z",
]

_MAD_TO_SIGMA: Final = 0.6745
_RANK: Final = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


_EDGE_RULES: Final = {
    EdgeAlertKind.ANOMALY: Rule.EDGE_ANOMALY,
    EdgeAlertKind.THRESHOLD: Rule.EDGE_THRESHOLD,
    EdgeAlertKind.SENSOR_FAULT: Rule.EDGE_SENSOR_FAULT,
    EdgeAlertKind.CONFIG_REJECTED: Rule.EDGE_CONFIG_REJECTED,
}
#: Cloud rules whose active alert confirms an edge verdict.
_EVIDENCE: Final = (Rule.THRESHOLD_HIGH, Rule.THRESHOLD_LOW, Rule.RATE_OF_CHANGE, Rule.OUTLIER)
_CONFIRMABLE: Final = (Rule.EDGE_ANOMALY, Rule.EDGE_THRESHOLD)


@dataclass(frozen=True, slots=True)
class Signal:
    """A rule's verdict for one (device, rule) at event time ``ts``.

    ``active=True``: the condition holds (open or keep open, possibly at a new
    severity); ``active=False``: its explicit clear condition holds.
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


@dataclass(slots=True)
class _Active:
    alert: Alert
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
    ...     return Signal("d1", "s1", Rule.THRESHOLD_HIGH, active, ts, value=9.0)
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
    """

    def __init__(self, settings: AlertSettings) -> None:
        self._settings = settings
        self._active: dict[tuple[str, str], _Active] = {}
        self._opens: dict[tuple[str, str], deque[int]] = {}
        #: alert_id -> highest version already stored/notified (restored state).
        self._known: dict[str, int] = {}
        #: (device, rule) -> event time its last alert resolved.
        self._floor: dict[tuple[str, str], int] = {}

    def active(self, device_id: str, rule: str) -> Alert | None:
        """The active alert of (device, rule), if any."""
        a = self._active.get((device_id, rule))
        return a.alert if a else None

    def active_alerts(self) -> list[Alert]:
        """All active alerts."""
        return [a.alert for a in self._active.values()]

    def restore(self, alerts: Iterable[Alert]) -> None:
        """Load stored alerts (open ones become active again) after a restart."""
        for alert in alerts:
            self._known[alert.alert_id] = max(alert.version, self._known.get(alert.alert_id, 0))
            if alert.status is AlertStatus.RESOLVED:
                end = alert.resolved_at if alert.resolved_at is not None else alert.updated_at
                self._floor[alert.key] = max(end, self._floor.get(alert.key, end))
            if alert.status is AlertStatus.OPEN:
                current = self._active.get(alert.key)
                if current is None:
                    newer = True
                elif current.alert.alert_id == alert.alert_id:
                    newer = current.alert.version < alert.version
                else:
                    newer = current.alert.opened_at < alert.opened_at
                if newer:
                    self._active[alert.key] = _Active(alert)
            opens = self._opens.setdefault(alert.key, deque())
            if alert.opened_at not in opens:  # restore runs again after each rebalance
                opens.append(alert.opened_at)
        for q in self._opens.values():
            ordered = sorted(q)
            q.clear()
            q.extend(ordered)

    def apply(self, s: Signal, *, late: bool) -> list[AlertChange]:
        """Apply one signal; return the resulting changes (usually none)."""
        key = (s.device_id, s.rule.value)
        current = self._active.get(key)
        if current is not None and s.ts < current.alert.updated_at:
            # Older than the alert's last change: already accounted for (a
            # record replayed after a restart, or a backlog still catching up).
            return []
        if current is None and s.ts <= self._floor.get(key, -1):
            # At or before the end of the key's last resolved alert: that
            # stretch of time has been judged already (a replay must not open
            # a second alert in the middle of a resolved one).
            return []
        if s.active:
            if current is None:
                return self._emit(self._open(s, late))
            return self._emit(self._keep(current, s, late))
        if current is None:
            return []
        return self._emit(self._clear(current, s, late))

    # -- transitions -------------------------------------------------------

    def _open(self, s: Signal, late: bool) -> list[AlertChange]:
        key = (s.device_id, s.rule.value)
        alert = Alert(
            alert_id=f"{s.device_id}.{s.rule.value}.{s.ts}",
            device_id=s.device_id,
            site=s.site,
            rule=s.rule.value,
            severity=s.severity,
            status=AlertStatus.OPEN,
            version=1,
            opened_at=s.ts,
            updated_at=s.ts,
            value=s.value,
            threshold=s.threshold,
            score=s.score,
            message=s.message,
            late=late,
            sensor_id=s.sensor_id,
        )
        self._active[key] = _Active(alert)
        opens = self._opens.setdefault(key, deque())
        opens.append(s.ts)
        horizon = s.ts - int(self._settings.flap_window_s * 1000)
        while opens and opens[0] < horizon:
            opens.popleft()
        return [AlertChange(ChangeKind.OPENED, alert, notify=not late)]

    def _keep(self, current: _Active, s: Signal, late: bool) -> list[AlertChange]:
        a = current.alert
        current.pending_clear_since = None
        if a.late and not late:
            # A condition first seen in a backlog still holds now: it is news.
            return [self._update(current, s, late=False, message=s.message or a.message)]
        if s.severity is not a.severity:
            return [self._update(current, s, late=late, message=s.message or a.message)]
        return []

    def _update(self, current: _Active, s: Signal, *, late: bool, message: str) -> AlertChange:
        a = current.alert
        alert = replace(
            a,
            severity=s.severity,
            version=a.version + 1,
            updated_at=max(a.updated_at, s.ts),
            value=s.value if s.value is not None else a.value,
            threshold=s.threshold if s.threshold is not None else a.threshold,
            score=s.score if s.score is not None else a.score,
            message=message,
            late=late,
        )
        current.alert = alert
        return AlertChange(ChangeKind.UPDATED, alert, notify=not late)

    def _clear(self, current: _Active, s: Signal, late: bool) -> list[AlertChange]:
        a = current.alert
        key = a.key
        out: list[AlertChange] = []
        flapping = a.flapping or len(self._opens.get(key, ())) >= self._settings.flap_max_opens
        if flapping:
            if not a.flapping:
                alert = replace(a, flapping=True, version=a.version + 1, updated_at=s.ts)
                current.alert = alert
                out.append(AlertChange(ChangeKind.UPDATED, alert, notify=not late))
            if current.pending_clear_since is None:
                current.pending_clear_since = s.ts
                current.pending_clear_reason = s.message
            if s.ts - current.pending_clear_since < self._settings.flap_hold_s * 1000:
                return out
        reason = current.pending_clear_reason if flapping else s.message
        a = current.alert
        alert = replace(
            a,
            status=AlertStatus.RESOLVED,
            version=a.version + 1,
            updated_at=s.ts,
            resolved_at=s.ts,
            clear_reason=reason or s.message,
            late=a.late or late,
        )
        del self._active[key]
        self._floor[key] = max(s.ts, self._floor.get(key, s.ts))
        out.append(AlertChange(ChangeKind.RESOLVED, alert, notify=not (late or a.late)))
        return out

    def _emit(self, changes: list[AlertChange]) -> list[AlertChange]:
        """Drop changes already stored before a restart (same id and version)."""
        if not self._known:
            return changes
        out = []
        for c in changes:
            if c.alert.version <= self._known.get(c.alert.alert_id, 0):
                continue
            out.append(c)
        return out


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
    med = _median(sorted(peers))
    mad = max(_median(sorted(abs(p - med) for p in peers)), min_mad)
    return _MAD_TO_SIGMA * (value - med) / mad


#: Ranges of seqs remembered per device (given up on, or covered by a Gap ahead).
_MAX_RANGES: Final = 32
_MAX_GIVEN_UP_REPORTED: Final = 1000


@dataclass(slots=True)
class _Order:
    """Reorder state of one device (see :meth:`FleetRules.on_reading`)."""

    #: Next seq the rules expect; None until the first reading of this process.
    expected: int | None = None
    #: First seq evaluated by this process: lower seqs were never seen here.
    low: int = 0
    #: seq -> (reading, processing time it was held at).
    held: dict[int, tuple[Reading, int]] = field(default_factory=dict)
    #: Inclusive seq ranges below ``expected`` given up on (never evaluated yet).
    skipped: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=_MAX_RANGES))
    #: Inclusive seq ranges at or above ``expected`` that a Gap says will never come.
    covered: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=_MAX_RANGES))

    def held_since(self) -> int:
        return min(t for _, t in self.held.values())

    def was_skipped(self, seq: int) -> bool:
        """Whether ``seq`` was given up on; forget it (it is being evaluated now)."""
        for i, (first, last) in enumerate(self.skipped):
            if first <= seq <= last:
                del self.skipped[i]
                if first < seq:
                    self.skipped.append((first, seq - 1))
                if seq < last:
                    self.skipped.append((seq + 1, last))
                return True
        return False


@dataclass(slots=True)
class _Device:
    device_id: str
    site: str
    settings: RuleSettings
    last_ts: int | None = None
    last_seen_ms: int | None = None  # processing time of the last reading
    last_temp: float | None = None
    sensor_id: str | None = None
    offline: bool = False
    status_ts: int = 0
    high_since: int | None = None
    low_since: int | None = None
    window: deque[tuple[int, float]] = field(default_factory=deque)
    faults: deque[int] = field(default_factory=deque)
    gap_until_seq: int | None = None
    order: _Order = field(default_factory=_Order)


class FleetRules:
    """All fleet rules over all devices, feeding one :class:`AlertBook`."""

    def __init__(self, rules: RulesConfig, alerts: AlertSettings) -> None:
        self._rules = rules
        self._alerts = alerts
        self.book = AlertBook(alerts)
        self._devices: dict[str, _Device] = {}
        self._sites: dict[str, set[str]] = {}
        self._max_event_ts = 0
        self._dirty_sites: set[str] = set()
        #: Devices holding readings for reordering, and how many are held in all.
        self._holding: set[str] = set()
        self._held_total = 0
        #: Seqs the reorder stage stopped waiting for, since the start (a metric).
        self.given_up = 0
        #: ``(device_id, first_seq, last_seq)`` of each hole given up since the
        #: caller last took them (:meth:`take_given_up`): seqs no Gap announced,
        #: lost on the way unless they turn up late.
        self._given_up_ranges: list[tuple[str, int, int]] = []

    # -- bookkeeping -------------------------------------------------------

    def _device(self, device_id: str, site: str) -> _Device:
        d = self._devices.get(device_id)
        if d is None:
            d = _Device(device_id, site, self._rules.for_device(device_id, site))
            self._devices[device_id] = d
            self._sites.setdefault(site, set()).add(device_id)
        return d

    def watermark(self, now_ms: int) -> int:
        """Event time before which events are late."""
        return max(
            self._max_event_ts - int(self._alerts.allowed_lateness_s * 1000),
            now_ms - int(self._alerts.max_event_age_s * 1000),
        )

    def _is_late(self, ts: int, now_ms: int) -> bool:
        late = ts < self.watermark(now_ms)
        self._max_event_ts = max(self._max_event_ts, min(ts, now_ms + 300_000))
        return late

    def _apply(self, signals: list[Signal], late: bool) -> list[AlertChange]:
        out: list[AlertChange] = []
        for s in signals:
            out += self.book.apply(s, late=late)
        return out

    def restore(self, alerts: Iterable[Alert]) -> None:
        """Rebuild alert state from the alerts index after a restart."""
        alerts = list(alerts)
        self.book.restore(alerts)
        for a in alerts:
            if a.status is AlertStatus.OPEN and a.rule == Rule.OFFLINE.value:
                self._device(a.device_id, a.site).offline = True

    # -- inputs ------------------------------------------------------------

    def on_reading(self, r: Reading, *, now_ms: int) -> list[AlertChange]:
        """Evaluate every reading rule for one reading, in seq order per device.

        Reorder stage: with two gateways a device's readings can reach Kafka
        out of seq order, and the rules judge only a device's newest reading,
        so a reading overtaken by the next one would be skipped. Only
        readings take seqs (alerts carry none, dropped seqs are announced by
        a :class:`Gap`), so a seq above the next expected one means a lower
        one is still in flight:

        * seq == expected (or the first reading of a device in this process):
          evaluated at once, with any held readings it unblocks -- no delay
          in the normal, in-order case;
        * seq > expected: held (at most ``reorder_max_held_per_device`` per
          device, ``reorder_max_held`` in all) until the missing seqs arrive,
          a Gap covers them, or ``reorder_wait_ms`` of processing time has
          passed at a :meth:`tick` (or a bound is hit): then the hole is
          given up and the held readings are evaluated in seq order;
        * seq < expected: a seq given up on (or older than the first seen by
          this process) is evaluated as it always was -- late, so only the
          rules that do not need the newest reading (fault storm, gap, stale)
          see it; a seq already evaluated is a duplicate (QoS 1 redelivery)
          and is ignored. A lower seq with a *newer* event time means the
          device's counter restarted: the device's order state starts over.

        >>> from telemetry_contract import Reading
        >>> from cloud_processor.config import AlertSettings, RulesConfig
        >>> rules = FleetRules(RulesConfig(threshold_high_c=8.0, min_duration_s=0,
        ...                                reorder_wait_ms=200), AlertSettings())
        >>> t0 = 1_767_225_600_000
        >>> def r(seq, temp):
        ...     return Reading(device_id="d1", sensor_id="host", site="s1", seq=seq,
        ...                    ts=t0 + seq * 1000, temp_c=temp)
        >>> rules.on_reading(r(1, 5.0), now_ms=t0)   # first: evaluated at once
        []
        >>> rules.on_reading(r(3, 5.0), now_ms=t0)   # overtook the spike, seq 2: held
        []
        >>> rules.is_held("d1", 3)
        True
        >>> out = rules.on_reading(r(2, 9.5), now_ms=t0)  # the hole is filled: 2, then 3
        >>> [(c.kind.value, c.alert.updated_at - t0) for c in out]
        [('opened', 2000), ('resolved', 3000)]
        >>> rules.on_reading(r(2, 9.5), now_ms=t0)   # a duplicate: not judged again
        []
        """
        d = self._device(r.device_id, r.site)
        o = d.order
        if o.expected is None:
            o.expected, o.low = r.seq + 1, r.seq
            return self._evaluate(d, r, now_ms)
        if r.seq == o.expected:
            o.expected += 1
            return self._evaluate(d, r, now_ms) + self._drain(d, now_ms)
        if r.seq > o.expected:
            return self._hold(d, r, now_ms)
        if d.last_ts is not None and r.ts > d.last_ts:
            # A lower seq with newer data: the device's seq counter restarted.
            out = self._give_up(d, now_ms, everything=True)
            o.expected, o.low = r.seq + 1, r.seq
            o.skipped.clear()
            o.covered.clear()
            return out + self._evaluate(d, r, now_ms)
        if r.seq < o.low or o.was_skipped(r.seq):
            return self._evaluate(d, r, now_ms)  # overtaken and given up on: late
        return []  # evaluated already: a duplicate

    def is_held(self, device_id: str, seq: int) -> bool:
        """Whether a reading is held by the reorder stage (not yet evaluated)."""
        d = self._devices.get(device_id)
        return d is not None and seq in d.order.held

    @property
    def held_count(self) -> int:
        """Readings held by the reorder stage, over all devices."""
        return self._held_total

    def next_release_ms(self) -> int | None:
        """Processing time at which the oldest held reading is released (None: none held)."""
        if not self._holding:
            return None
        wait = self._rules.reorder_wait_ms
        return min(self._devices[i].order.held_since() for i in self._holding) + wait

    def take_given_up(self) -> list[tuple[str, int, int]]:
        """The holes given up since the last call, as ``(device_id, first_seq, last_seq)``.

        At most 1,000 are kept between two calls (the counter
        :attr:`given_up` counts every seq).
        """
        out, self._given_up_ranges = self._given_up_ranges, []
        return out

    def release_held(self, now_ms: int) -> list[AlertChange]:
        """Give up every hole and evaluate all held readings (end of a replay)."""
        out: list[AlertChange] = []
        for device_id in sorted(self._holding):
            out += self._give_up(self._devices[device_id], now_ms, everything=True)
        return out

    def _hold(self, d: _Device, r: Reading, now_ms: int) -> list[AlertChange]:
        o = d.order
        if r.seq in o.held:
            return []  # a duplicate of a held reading
        o.held[r.seq] = (r, now_ms)
        self._held_total += 1
        self._holding.add(d.device_id)
        out: list[AlertChange] = []
        cfg = self._rules
        if cfg.reorder_wait_ms <= 0 or len(o.held) > cfg.reorder_max_held_per_device:
            out += self._give_up(d, now_ms)
        while self._held_total > self._rules.reorder_max_held:
            oldest = min(self._holding, key=lambda i: self._devices[i].order.held_since())
            out += self._give_up(self._devices[oldest], now_ms)
        return out

    def _give_up(self, d: _Device, now_ms: int, *, everything: bool = False) -> list[AlertChange]:
        """Stop waiting for the lowest hole (or all holes) and evaluate what it blocked."""
        o = d.order
        out: list[AlertChange] = []
        while o.held and o.expected is not None:
            first = min(o.held)
            if first > o.expected:
                o.skipped.append((o.expected, first - 1))
                self.given_up += first - o.expected
                if len(self._given_up_ranges) < _MAX_GIVEN_UP_REPORTED:
                    self._given_up_ranges.append((d.device_id, o.expected, first - 1))
                o.expected = first
            elif first < o.expected:  # never held that way; judged rather than stranded
                self._held_total -= 1
                out += self._evaluate(d, o.held.pop(first)[0], now_ms)
            out += self._drain(d, now_ms)
            if not everything:
                break
        return out

    def _drain(self, d: _Device, now_ms: int) -> list[AlertChange]:
        """Evaluate held readings from ``expected`` on while nothing is missing."""
        o = d.order
        out: list[AlertChange] = []
        while o.expected is not None:
            held = o.held.pop(o.expected, None)
            if held is not None:
                self._held_total -= 1
                o.expected += 1
                out += self._evaluate(d, held[0], now_ms)
                continue
            cover = next((c for c in o.covered if c[0] <= o.expected <= c[1]), None)
            if cover is None:
                break
            o.covered.remove(cover)
            o.expected = cover[1] + 1
            for seq in sorted(x for x in o.held if x < o.expected):
                # Held, yet a Gap says it was dropped: judge it anyway, in order.
                self._held_total -= 1
                out += self._evaluate(d, o.held.pop(seq)[0], now_ms)
        if not o.held:
            self._holding.discard(d.device_id)
        return out

    def _on_gap_seqs(self, d: _Device, gap: Gap, now_ms: int) -> list[AlertChange]:
        """A Gap announces seqs that will never come: stop waiting for them."""
        o = d.order
        if o.expected is None or gap.last_seq < o.expected:
            return []
        o.covered.append((gap.first_seq, gap.last_seq))
        return self._drain(d, now_ms)

    def _expire(self, now_ms: int) -> list[AlertChange]:
        out: list[AlertChange] = []
        wait = self._rules.reorder_wait_ms
        for device_id in sorted(self._holding):
            d = self._devices[device_id]
            while d.order.held and d.order.held_since() + wait <= now_ms:
                out += self._give_up(d, now_ms)
        return out

    def _evaluate(self, d: _Device, r: Reading, now_ms: int) -> list[AlertChange]:
        late = self._is_late(r.ts, now_ms)
        signals: list[Signal] = []
        newest = d.last_ts is None or r.ts >= d.last_ts
        if newest:
            d.last_ts = r.ts
            d.last_seen_ms = now_ms
            d.sensor_id = r.sensor_id
        # Fresh data clears a stale alert; data past a gap clears the gap.
        if self._has(d, Rule.STALE):
            signals.append(self._sig(d, Rule.STALE, False, r.ts, message="readings resumed"))
        if d.gap_until_seq is not None and r.seq > d.gap_until_seq:
            d.gap_until_seq = None
            signals.append(
                self._sig(d, Rule.DATA_GAP, False, r.ts, message=f"reading seq {r.seq} arrived")
            )
        signals += self._fault_storm(d, r)
        if r.quality is Quality.OK and r.temp_c is not None and newest:
            d.last_temp = r.temp_c
            signals += self._threshold(d, r.ts, r.temp_c)
            signals += self._rate(d, r.ts, r.temp_c)
            self._dirty_sites.add(d.site)
        changes = self._apply(signals, late)
        if any(c.alert.rule in _EVIDENCE for c in changes):
            changes += self._reconfirm(d, r.ts, late)
        return changes

    def on_status(self, st: DeviceStatus, *, now_ms: int) -> list[AlertChange]:
        """Device offline (last will) opens an alert; online resolves it.

        A last will is composed when the device connects, so it carries the
        same ``ts`` as the ``online`` status of that connection, yet it always
        comes after it: an offline status that ties with the online status
        before it is ordered one millisecond later (deterministically, so a
        replay gives the same alert).
        """
        d = self._device(st.device_id, st.site)
        offline = st.state is DeviceState.OFFLINE
        ts = st.ts
        if offline and ts == d.status_ts and not d.offline:
            ts += 1
        if ts < d.status_ts:
            return []  # an older status overtaken by a newer one
        d.status_ts = ts
        late = self._is_late(ts, now_ms)
        d.offline = offline
        if offline:
            msg = f"device offline: {st.reason}" if st.reason else "device offline"
            sig = self._sig(d, Rule.OFFLINE, True, ts, message=msg)
        else:
            sig = self._sig(d, Rule.OFFLINE, False, st.ts, message="device back online")
            d.last_seen_ms = now_ms  # give it stale_after_s to send a reading
        return self._apply([sig], late)

    def on_edge_alert(self, ea: EdgeAlert, *, now_ms: int) -> list[AlertChange]:
        """Surface an edge alert; cloud evidence on the same device raises its severity."""
        d = self._device(ea.device_id, ea.site)
        late = self._is_late(ea.ts, now_ms)
        rule = _EDGE_RULES[ea.kind]
        if ea.state is AlertState.CLEARED:
            sig = self._sig(d, rule, False, ea.ts, message=f"edge cleared {ea.alert_id}")
            return self._apply([sig], late)
        severity = ea.severity
        message = ea.message or f"edge {ea.kind.value}"
        if rule in _CONFIRMABLE:
            evidence = self._evidence(d)
            if evidence:
                severity = _bump(severity)
                message = f"{message} (confirmed by {', '.join(evidence)})"
        sig = self._sig(
            d,
            rule,
            True,
            ea.ts,
            severity=severity,
            value=ea.temp_c,
            score=ea.anomaly_score,
            message=message,
        )
        return self._apply([sig], late)

    def on_gap(self, gap: Gap, *, now_ms: int) -> list[AlertChange]:
        """Edge data loss: an alert until a reading after the gap arrives."""
        d = self._device(gap.device_id, gap.site)
        late = self._is_late(gap.ts, now_ms)
        d.gap_until_seq = max(gap.last_seq, d.gap_until_seq or 0)
        sig = self._sig(
            d,
            Rule.DATA_GAP,
            True,
            gap.ts,
            value=float(gap.count),
            message=f"edge dropped seq {gap.first_seq}..{gap.last_seq} "
            f"({gap.count} readings, {gap.reason.value})",
        )
        return self._apply([sig], late) + self._on_gap_seqs(d, gap, now_ms)

    def tick(self, now_ms: int) -> list[AlertChange]:
        """Rules evaluated once per batch: fleet outliers, and stale sensors
        (no reading for ``stale_after_s`` of processing time); first, readings
        held by the reorder stage for ``reorder_wait_ms`` are released."""
        out: list[AlertChange] = self._expire(now_ms)
        out += self._outliers(now_ms)
        for d in self._devices.values():
            if d.last_seen_ms is None or d.last_ts is None or d.offline:
                continue
            silent = now_ms - d.last_seen_ms
            if silent >= d.settings.stale_after_s * 1000:
                ts = d.last_ts + int(d.settings.stale_after_s * 1000)
                sig = self._sig(
                    d,
                    Rule.STALE,
                    True,
                    ts,
                    message=f"no reading for {silent / 1000:.0f} s "
                    f"(limit {d.settings.stale_after_s:.0f} s)",
                )
                out += self._apply([sig], late=False)
        return out

    # -- rules ---------------------------------------------------------------

    def _has(self, d: _Device, rule: Rule) -> bool:
        """Whether (device, rule) has an active alert: clear signals are only
        built for those (most readings clear nothing, and this is the hot path)."""
        return self.book.active(d.device_id, rule) is not None

    def _sig(
        self,
        d: _Device,
        rule: Rule,
        active: bool,
        ts: int,
        *,
        severity: Severity = Severity.WARNING,
        value: float | None = None,
        threshold: float | None = None,
        score: float | None = None,
        message: str = "",
    ) -> Signal:
        return Signal(
            d.device_id,
            d.site,
            rule,
            active,
            ts,
            severity=severity,
            value=value,
            threshold=threshold,
            score=score,
            message=message,
            sensor_id=d.sensor_id,
        )

    def _threshold(self, d: _Device, ts: int, temp: float) -> list[Signal]:
        s = d.settings
        out: list[Signal] = []
        min_ms = s.min_duration_s * 1000
        if s.threshold_high_c is not None:
            limit = s.threshold_high_c
            if temp >= limit:
                d.high_since = ts if d.high_since is None else d.high_since
                if ts - d.high_since >= min_ms:
                    crit = s.critical_high_c is not None and temp >= s.critical_high_c
                    out.append(
                        self._sig(
                            d,
                            Rule.THRESHOLD_HIGH,
                            True,
                            ts,
                            severity=Severity.CRITICAL if crit else Severity.WARNING,
                            value=temp,
                            threshold=s.critical_high_c if crit else limit,
                            message=f"temp_c {temp} >= {limit} for "
                            f"{(ts - d.high_since) / 1000:.0f} s",
                        )
                    )
            else:
                d.high_since = None
                clear_at = limit - s.hysteresis_c
                if temp <= clear_at and self._has(d, Rule.THRESHOLD_HIGH):
                    out.append(
                        self._sig(
                            d,
                            Rule.THRESHOLD_HIGH,
                            False,
                            ts,
                            value=temp,
                            message=f"temp_c {temp} <= {clear_at:g} (threshold {limit:g} "
                            f"- hysteresis {s.hysteresis_c:g})",
                        )
                    )
        if s.threshold_low_c is not None:
            limit = s.threshold_low_c
            if temp <= limit:
                d.low_since = ts if d.low_since is None else d.low_since
                if ts - d.low_since >= min_ms:
                    crit = s.critical_low_c is not None and temp <= s.critical_low_c
                    out.append(
                        self._sig(
                            d,
                            Rule.THRESHOLD_LOW,
                            True,
                            ts,
                            severity=Severity.CRITICAL if crit else Severity.WARNING,
                            value=temp,
                            threshold=s.critical_low_c if crit else limit,
                            message=f"temp_c {temp} <= {limit} for "
                            f"{(ts - d.low_since) / 1000:.0f} s",
                        )
                    )
            else:
                d.low_since = None
                clear_at = limit + s.hysteresis_c
                if temp >= clear_at and self._has(d, Rule.THRESHOLD_LOW):
                    out.append(
                        self._sig(
                            d,
                            Rule.THRESHOLD_LOW,
                            False,
                            ts,
                            value=temp,
                            message=f"temp_c {temp} >= {clear_at:g} (threshold {limit:g} "
                            f"+ hysteresis {s.hysteresis_c:g})",
                        )
                    )
        return out

    def _rate(self, d: _Device, ts: int, temp: float) -> list[Signal]:
        s = d.settings
        window_ms = int(s.rate_window_s * 1000)
        w = d.window
        w.append((ts, temp))
        while w and w[0][0] < ts - window_ms:
            w.popleft()
        if s.rate_max_c_per_min is None:
            return []
        t_first, v_first = w[0]
        span_ms = ts - t_first
        if span_ms < window_ms / 2:
            return []  # too short a baseline: one LSB step would look like a storm
        rate = (temp - v_first) / (span_ms / 60_000)
        limit = s.rate_max_c_per_min
        clear = s.rate_clear_c_per_min if s.rate_clear_c_per_min is not None else limit / 2
        if abs(rate) >= limit:
            return [
                self._sig(
                    d,
                    Rule.RATE_OF_CHANGE,
                    True,
                    ts,
                    value=round(rate, 3),
                    threshold=limit,
                    message=f"temperature changing at {rate:+.2f} °C/min (limit {limit:g})",
                )
            ]
        if abs(rate) <= clear and self._has(d, Rule.RATE_OF_CHANGE):
            return [
                self._sig(
                    d,
                    Rule.RATE_OF_CHANGE,
                    False,
                    ts,
                    value=round(rate, 3),
                    message=f"rate {rate:+.2f} °C/min within {clear:g}",
                )
            ]
        return []

    def _outliers(self, now_ms: int) -> list[AlertChange]:
        """Fleet outlier for every site that got readings since the last tick.

        Evaluated per site after a batch rather than per reading, so the
        verdict does not depend on how the site's devices interleave across
        Kafka partitions: each device's latest reading is compared with the
        latest readings of the site's devices within ``outlier_window_s`` of
        the site's newest one.
        """
        out: list[AlertChange] = []
        for site in sorted(self._dirty_sites):
            members = [self._devices[i] for i in sorted(self._sites.get(site, ()))]
            current = [d for d in members if d.last_temp is not None and d.last_ts is not None]
            if not current:
                continue
            newest = max(d.last_ts for d in current if d.last_ts is not None)
            for d in current:
                s = d.settings
                horizon = newest - int(s.outlier_window_s * 1000)
                peers = [
                    o.last_temp
                    for o in current
                    if o.last_temp is not None and o.last_ts is not None and o.last_ts >= horizon
                ]
                if d.last_ts is None or d.last_temp is None or d.last_ts < horizon:
                    continue
                if len(peers) < s.outlier_min_peers:
                    continue
                sig = self._outlier_signal(d, d.last_ts, d.last_temp, peers)
                if sig is None:
                    continue
                late = d.last_ts < self.watermark(now_ms)
                changes = self.book.apply(sig, late=late)
                if changes:
                    changes += self._reconfirm(d, d.last_ts, late)
                out += changes
        self._dirty_sites.clear()
        return out

    def _outlier_signal(
        self, d: _Device, ts: int, temp: float, peers: list[float]
    ) -> Signal | None:
        s = d.settings
        z = robust_z(temp, peers, s.outlier_min_mad_c)
        if abs(z) >= s.outlier_z:
            return self._sig(
                d,
                Rule.OUTLIER,
                True,
                ts,
                value=temp,
                score=round(abs(z), 3),
                threshold=s.outlier_z,
                message=f"{temp} °C is {z:+.1f} robust SDs from the site median "
                f"({len(peers)} devices)",
            )
        if abs(z) <= s.outlier_clear_z and self._has(d, Rule.OUTLIER):
            return self._sig(
                d,
                Rule.OUTLIER,
                False,
                ts,
                value=temp,
                score=round(abs(z), 3),
                message=f"z {z:+.1f} back within {s.outlier_clear_z:g}",
            )
        return None

    def _fault_storm(self, d: _Device, r: Reading) -> list[Signal]:
        s = d.settings
        window_ms = int(s.fault_storm_window_s * 1000)
        q = d.faults
        if r.quality is not Quality.OK:
            q.append(r.ts)
        while q and q[0] < r.ts - window_ms:
            q.popleft()
        if len(q) >= s.fault_storm_count:
            return [
                self._sig(
                    d,
                    Rule.FAULT_STORM,
                    True,
                    r.ts,
                    value=float(len(q)),
                    threshold=float(s.fault_storm_count),
                    message=f"{len(q)} faulty readings in {s.fault_storm_window_s:.0f} s "
                    f"(last: {r.quality.value})",
                )
            ]
        if not q and self._has(d, Rule.FAULT_STORM):
            return [
                self._sig(
                    d,
                    Rule.FAULT_STORM,
                    False,
                    r.ts,
                    message=f"no faulty reading for {s.fault_storm_window_s:.0f} s",
                )
            ]
        return []

    def _evidence(self, d: _Device) -> list[str]:
        return [r.value for r in _EVIDENCE if self.book.active(d.device_id, r.value) is not None]

    def _reconfirm(self, d: _Device, ts: int, late: bool) -> list[AlertChange]:
        """Cloud evidence appeared or vanished: re-grade active edge alerts."""
        out: list[AlertChange] = []
        evidence = self._evidence(d)
        for rule in _CONFIRMABLE:
            a = self.book.active(d.device_id, rule.value)
            if a is None:
                continue
            base = a.severity if "(confirmed by" in a.message else None
            if evidence and base is None:
                sig = self._sig(
                    d,
                    rule,
                    True,
                    ts,
                    severity=_bump(a.severity),
                    message=f"{a.message} (confirmed by {', '.join(evidence)})",
                )
                out += self.book.apply(sig, late=late)
        return out


def _bump(severity: Severity) -> Severity:
    """One level up: info -> warning -> critical -> critical."""
    return {0: Severity.WARNING, 1: Severity.CRITICAL, 2: Severity.CRITICAL}[_RANK[severity]]

"""FleetRules: routes messages and ticks through the reorder stage, the rules and the book.

It does no I/O and reads no clock: the caller passes processing time
``now_ms``, so a test replays a crafted sequence and gets the same alerts
every time.

Lateness: an event is *late* when its event time is behind the watermark --
the newest event time seen minus ``allowed_lateness_s`` -- or older than
``now_ms - max_event_age_s`` (a backlog replayed by an edge agent after an
outage, or a ``processor replay``). Late changes are recorded (the alert
document says ``late: true``) but never notified as new alerts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from cloud_processor.rules.base import Device, FleetRule
from cloud_processor.rules.lifecycle import AlertBook, Signal
from cloud_processor.rules.registry import RULES
from cloud_processor.rules.reorder import ReorderStage
from cloud_processor.rules.settings import AlertSettings, RulesConfig
from telemetry_contract import (
    Alert,
    AlertChange,
    AlertStatus,
    DeviceStatus,
    EdgeAlert,
    Gap,
    Quality,
    Reading,
    Rule,
)

__all__ = ["FleetRules"]

#: An event time further ahead of processing time than this does not move the
#: watermark (a device with a wrong clock must not make everyone late).
_MAX_AHEAD_MS: Final = 300_000


def _overrides(rule: FleetRule, hook: str) -> bool:
    """Whether ``rule`` listens to ``hook`` (the facade calls only those)."""
    return getattr(type(rule), hook) is not getattr(FleetRule, hook)


class FleetRules:
    """All fleet rules over all devices, feeding one :class:`AlertBook`.

    >>> from telemetry_contract import Reading
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

    Readings go through the reorder stage first (:mod:`.reorder`): a seq
    that overtook a lower one waits for it, so a spike is judged in order.

    >>> rules.on_reading(r(5, 5.0), now_ms=t0), rules.is_held("d1", 5)
    ([], True)
    >>> [(c.kind.value, c.alert.updated_at - t0) for c in rules.on_reading(r(4, 9.5), now_ms=t0)]
    [('opened', 4000), ('resolved', 5000)]
    """

    def __init__(
        self,
        rules: RulesConfig,
        alerts: AlertSettings,
        *,
        registry: Iterable[Callable[[AlertBook], FleetRule]] = RULES,
    ) -> None:
        self._config = rules
        self._alert_settings = alerts
        self.book = AlertBook(alerts)
        self._reorder = ReorderStage(
            wait_ms=rules.reorder_wait_ms,
            max_held=rules.reorder_max_held,
            max_held_per_device=rules.reorder_max_held_per_device,
        )
        every = self._rules = [make(self.book) for make in registry]
        self._reading_rules = [r for r in every if _overrides(r, "on_reading")]
        self._temperature_rules = [r for r in every if _overrides(r, "on_temperature")]
        self._status_rules = [r for r in every if _overrides(r, "on_status")]
        self._edge_rules = [r for r in every if _overrides(r, "on_edge_alert")]
        self._gap_rules = [r for r in every if _overrides(r, "on_gap")]
        self._tick_rules = [r for r in every if _overrides(r, "on_tick")]
        self._change_rules = [r for r in every if _overrides(r, "on_changes")]
        #: device_id -> facts, in the order devices were first seen.
        self._devices: dict[str, Device] = {}
        self._max_event_ts = 0
        #: device_id -> processing time it was last heard from, least recent
        #: first (moved to the end on every message): what eviction scans.
        self._heard: dict[str, int] = {}
        #: Evicted devices whose alerts are still open: device_id -> when last
        #: heard from, least recent first.
        self._parked: dict[str, int] = {}
        self._idle_ms = int(rules.device_idle_s * 1000)
        #: Devices evicted and alerts resolved by eviction, since the start (metrics).
        self.evicted = 0
        self.evicted_alerts = 0

    # -- messages ----------------------------------------------------------

    def on_reading(self, reading: Reading, *, now_ms: int) -> list[AlertChange]:
        """Evaluate every reading rule for one reading, in seq order per device.

        The reading may be held by the reorder stage (nothing judged yet), or
        release readings it held (all judged now, in seq order).
        """
        device = self._device(reading.device_id, reading.site, now_ms)
        released = self._reorder.push(reading, now_ms)
        if len(released) == 1 and released[0] is reading:  # the usual, in-order case
            return self._judge(device, reading, now_ms)
        # Possibly readings of other devices too (the stage's global bound).
        return self._judge_all(released, now_ms)

    def on_status(self, status: DeviceStatus, *, now_ms: int) -> list[AlertChange]:
        """Device offline (last will) opens an alert; online resolves it."""
        device = self._device(status.device_id, status.site, now_ms)
        ts = device.take_status(status, now_ms)
        if ts is None:
            return []
        late = self._is_late(ts, now_ms)
        signals = _decided(rule.on_status(device, status, ts) for rule in self._status_rules)
        return self._apply(device, signals, late, ts)

    def on_edge_alert(self, alert: EdgeAlert, *, now_ms: int) -> list[AlertChange]:
        """Surface an edge alert; cloud evidence on the same device raises its severity."""
        device = self._device(alert.device_id, alert.site, now_ms)
        late = self._is_late(alert.ts, now_ms)
        signals = _decided(rule.on_edge_alert(device, alert) for rule in self._edge_rules)
        return self._apply(device, signals, late, alert.ts)

    def on_gap(self, gap: Gap, *, now_ms: int) -> list[AlertChange]:
        """Edge data loss: an alert until a reading after the gap arrives.

        The reorder stage stops waiting for the seqs the gap covers.
        """
        device = self._device(gap.device_id, gap.site, now_ms)
        late = self._is_late(gap.ts, now_ms)
        signals = _decided(rule.on_gap(device, gap) for rule in self._gap_rules)
        out = self._apply(device, signals, late, gap.ts)
        for released in self._reorder.gap(gap):
            out += self._judge(device, released, now_ms)
        return out

    def tick(self, now_ms: int) -> list[AlertChange]:
        """Rules evaluated once per batch (fleet outliers, stale sensors).

        First, readings held by the reorder stage for ``reorder_wait_ms`` are
        released and judged.
        """
        out = self._judge_all(self._reorder.expire(now_ms), now_ms)
        out += self.evict(now_ms)
        watermark = self.watermark(now_ms)
        for rule in self._tick_rules:
            for signal, late in rule.on_tick(self._devices, now_ms, watermark):
                device = self._devices[signal.device_id]
                out += self._apply(device, [signal], late, signal.ts)
        return out

    def restore(self, alerts: Iterable[Alert], *, now_ms: int | None = None) -> None:
        """Rebuild alert state from the alerts index after a restart.

        Their devices count as heard from at ``now_ms`` (and are evicted as
        usual when nothing more comes from them; None: from their next message).
        """
        alerts = list(alerts)
        self.book.restore(alerts)
        for alert in alerts:
            if alert.status is AlertStatus.OPEN and alert.rule == Rule.OFFLINE.value:
                self._device(alert.device_id, alert.site, now_ms).offline = True
            elif now_ms is not None and alert.device_id not in self._heard:
                self._parked.pop(alert.device_id, None)
                self._heard[alert.device_id] = now_ms

    # -- bounded state -------------------------------------------------------

    def site_size(self, site: str) -> int:
        """Devices of ``site`` whose state is kept (what "most of a site" counts)."""
        return sum(1 for d in self._devices.values() if d.site == site)

    @property
    def device_count(self) -> int:
        """Devices whose state is kept, evicted ones with open alerts included."""
        return len(self._heard) + len(self._parked)

    def evict(self, now_ms: int) -> list[AlertChange]:
        """Evict idle devices, then, beyond ``max_devices``, the device heard
        from longest ago.

        An evicted device loses its rule state (readings the reorder stage held
        for it are judged first), never its stored readings nor its open
        alerts: those stay open ("parked") and are cleared as usual when the
        device is heard from again -- a stale or offline alert is exactly what
        an idle device should keep showing. Parked devices count toward
        ``max_devices``: when the device given up for the limit is a parked
        one, its alerts are resolved with a ``clear_reason`` naming the limit
        (stored and published on the alerts topic, logged, counted; not
        notified, so a flood of device ids cannot become a notification storm).
        """
        out: list[AlertChange] = []
        horizon = now_ms - self._idle_ms
        heard, parked = self._heard, self._parked
        while heard:
            device_id, last = next(iter(heard.items()))
            if last > horizon:
                break
            out += self._forget(device_id, now_ms)
        limit = self._config.max_devices
        while len(heard) + len(parked) > limit:
            # Give up the device heard from longest ago, parked or not (a
            # parked one on a tie: a whole batch shares one processing time,
            # and parking its devices one by one would drop them all).
            first_heard = next(iter(heard.items()), None)
            first_parked = next(iter(parked.items()), None)
            if first_heard is not None and (
                first_parked is None or first_heard[1] < first_parked[1]
            ):
                out += self._forget(first_heard[0], now_ms)
                continue
            assert first_parked is not None  # over the limit: one of them is not empty
            device_id = first_parked[0]
            del parked[device_id]
            resolved = self.book.resolve_all(
                device_id,
                ts=now_ms,
                reason=f"state evicted: more than rules.max_devices ({limit}) devices",
            )
            self.evicted_alerts += len(resolved)
            out += resolved
            for rule in self._rules:
                rule.forget(device_id, "")
        return out

    def _forget(self, device_id: str, now_ms: int) -> list[AlertChange]:
        """Drop the device's state (it is no longer heard); park its open alerts."""
        last_heard = self._heard.pop(device_id)
        self.evicted += 1
        out: list[AlertChange] = []
        device = self._devices.get(device_id)
        if device is not None:
            out += self._judge_all(self._reorder.forget(device_id), now_ms)
            del self._devices[device_id]
            for rule in self._rules:
                rule.forget(device_id, device.site)
        self.book.forget(device_id)
        if self.book.open_rules(device_id):
            self._parked[device_id] = last_heard
        return out

    # -- the reorder stage -------------------------------------------------

    def is_held(self, device_id: str, seq: int) -> bool:
        """Whether a reading is held by the reorder stage (not yet evaluated)."""
        return self._reorder.is_held(device_id, seq)

    @property
    def held_count(self) -> int:
        """Readings held by the reorder stage, over all devices."""
        return self._reorder.held_count

    @property
    def given_up(self) -> int:
        """Seqs the reorder stage stopped waiting for, since the start (a metric)."""
        return self._reorder.given_up

    def next_release_ms(self) -> int | None:
        """Processing time at which the oldest held reading is released (None: none held)."""
        return self._reorder.next_release_ms()

    def take_given_up(self) -> list[tuple[str, int, int]]:
        """The holes given up since the last call, as ``(device_id, first_seq, last_seq)``.

        At most 1,000 are kept between two calls (the counter
        :attr:`given_up` counts every seq): seqs no Gap announced, lost on
        the way unless they turn up late.
        """
        return self._reorder.take_given_up()

    def release_held(self, now_ms: int) -> list[AlertChange]:
        """Give up every hole and evaluate all held readings (end of a replay)."""
        return self._judge_all(self._reorder.release_all(), now_ms)

    # -- lateness ----------------------------------------------------------

    def watermark(self, now_ms: int) -> int:
        """Event time before which events are late."""
        return max(
            self._max_event_ts - int(self._alert_settings.allowed_lateness_s * 1000),
            now_ms - int(self._alert_settings.max_event_age_s * 1000),
        )

    def _is_late(self, ts: int, now_ms: int) -> bool:
        """Whether an event is late; it moves the watermark."""
        late = ts < self.watermark(now_ms)
        self._max_event_ts = max(self._max_event_ts, min(ts, now_ms + _MAX_AHEAD_MS))
        return late

    # -- judging -----------------------------------------------------------

    def _device(self, device_id: str, site: str, now_ms: int | None) -> Device:
        if now_ms is not None:
            heard = self._heard
            if heard.pop(device_id, None) is None:
                self._parked.pop(device_id, None)
            heard[device_id] = now_ms  # most recently heard: last in the scan
        device = self._devices.get(device_id)
        if device is None:
            device = Device(device_id, site, self._config.for_device(device_id, site))
            self._devices[device_id] = device
        return device

    def _judge_all(self, readings: list[Reading], now_ms: int) -> list[AlertChange]:
        out: list[AlertChange] = []
        for reading in readings:
            out += self._judge(self._devices[reading.device_id], reading, now_ms)
        return out

    def _judge(self, device: Device, reading: Reading, now_ms: int) -> list[AlertChange]:
        """Every reading rule on one reading the reorder stage released."""
        late = self._is_late(reading.ts, now_ms)
        newest = device.take_reading(reading, now_ms)
        # Plain loops: this runs for every reading.
        signals: list[Signal] = []
        for rule in self._reading_rules:
            signal = rule.on_reading(device, reading)
            if signal is not None:
                signals.append(signal)
        temp_c = reading.temp_c
        if newest and temp_c is not None and reading.quality is Quality.OK:
            device.last_temp = temp_c
            for rule in self._temperature_rules:
                signal = rule.on_temperature(device, reading.ts, temp_c)
                if signal is not None:
                    signals.append(signal)
        if not signals:
            return []
        return self._apply(device, signals, late, reading.ts)

    def _apply(
        self, device: Device, signals: list[Signal], late: bool, ts: int
    ) -> list[AlertChange]:
        """Apply one message's signals, then let rules react to the changes (once)."""
        changes: list[AlertChange] = []
        for signal in signals:
            changes += self.book.apply(signal, late=late)
        if changes:
            reactions: list[Signal] = []
            for rule in self._change_rules:
                reactions += rule.on_changes(device, changes, ts)
            for signal in reactions:
                changes += self.book.apply(signal, late=late)
        return changes


def _decided(signals: Iterable[Signal | None]) -> list[Signal]:
    return [signal for signal in signals if signal is not None]

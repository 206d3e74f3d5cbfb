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

from collections import OrderedDict
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, Final

import msgspec

from cloud_processor.rules.base import Device, FleetRule, repack
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
        records: MutableMapping[str, bytes] | None = None,
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
        #: first (moved to the end on every message): what eviction scans. An
        #: OrderedDict: finding the first entry of a plain dict after popping
        #: from its front skips every deleted slot (a walk of the fleet).
        self._heard: OrderedDict[str, int] = OrderedDict()
        #: Compacted devices (idle): device_id -> when last heard from, least
        #: recently heard first.
        self._parked: dict[str, int] = {}
        #: Their compact records (see :meth:`_forget`): in memory, or wherever
        #: ``records`` keeps them (``rules.state_spill_dir``: an SQLite file).
        self._records: MutableMapping[str, bytes] = {} if records is None else records
        #: site -> devices kept (full state or compacted): what ``site_size`` says.
        self._site_devices: dict[str, int] = {}
        self._idle_ms = int(rules.device_idle_s * 1000)
        #: Most devices with full state since the per-device dicts were last
        #: repacked (see :func:`~cloud_processor.rules.base.repack`).
        self._peak = 0
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
        out += self._evict_over_limit(now_ms)
        watermark = self.watermark(now_ms)
        for rule in self._tick_rules:
            for signal, late in rule.on_tick(self._devices, now_ms, watermark):
                device = self._devices[signal.device_id]
                out += self._apply(device, [signal], late, signal.ts)
        # After the rules: a device idle for device_idle_s (>= stale_after_s)
        # has had its stale verdict at this tick, if not before.
        out += self._evict_idle(now_ms)
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
            elif alert.device_id in self._parked:
                self._device(alert.device_id, alert.site, now_ms)  # its state back
            elif now_ms is not None and alert.device_id not in self._heard:
                self._heard[alert.device_id] = now_ms

    def hand_over(self, keep: Callable[[str], bool]) -> int:
        """Drop every device ``keep`` says False of -- its state, compacted
        record, held readings and the book's alerts -- without any alert
        change: the group gave its partition to another processor, which
        restores its alerts from the index and judges it from then on. Kept
        here, its stale deadline would open a false ``stale_sensor`` alert
        after the device moved away. Returns how many were dropped.
        """
        dropped = 0
        for device_id in [d for d in self._devices if not keep(d)]:
            device = self._devices.pop(device_id)
            self._count_site(device.site, -1)
            self._drop(device_id, device.site)
            dropped += 1
        for device_id in [d for d in self._parked if not keep(d)]:
            del self._parked[device_id]
            record = _DECODE(self._records.pop(device_id))
            if record[0] is not None:
                self._count_site(record[0], -1)
            self.book.drop(device_id, record[-1])
            dropped += 1
        others = set(self._heard).union(self.book.devices())
        for device_id in [d for d in others if not keep(d)]:
            self._drop(device_id, "")  # known only from a restored alert
        return dropped

    def resume(
        self,
        last_heard: Iterable[tuple[str, str, int]],
        *,
        keep: Callable[[str], bool],
        now_ms: int,
    ) -> int:
        """Watch the devices of ``last_heard`` -- (device_id, site, event time of
        its last reading), from storage -- that ``keep`` says are this
        processor's and that it knows nothing of: a device silent since just
        before a takeover or a restart goes stale on time (its processing time
        taken as that event time, capped at ``now_ms``). Returns how many."""
        count = 0
        for device_id, site, last_ts in last_heard:
            if device_id in self._devices or device_id in self._parked or not keep(device_id):
                continue
            device = self._device(device_id, site, now_ms)
            device.last_seen_ms = min(last_ts, now_ms)
            for rule in self._rules:
                rule.resume(device, last_ts)
            count += 1
        return count

    def _drop(self, device_id: str, site: str) -> None:
        self._heard.pop(device_id, None)
        self._reorder.drop(device_id)
        for rule in self._rules:
            rule.forget(device_id, site)
        self.book.drop(device_id)

    # -- bounded state -------------------------------------------------------

    def site_size(self, site: str) -> int:
        """Devices of ``site`` whose state is kept, compacted ones included
        (what "most of a site" counts)."""
        return self._site_devices.get(site, 0)

    @property
    def device_count(self) -> int:
        """Devices whose state is kept, evicted ones with open alerts included."""
        return len(self._heard) + len(self._parked)

    def evict(self, now_ms: int) -> list[AlertChange]:
        """Compact idle devices, then, beyond ``max_devices``, give up the
        device heard from longest ago (:meth:`tick` does the second before its
        rules, the first after them).

        A compacted ("parked") device keeps its rule state and open alerts in
        a compact record (readings the reorder stage held for it are judged
        first), rebuilt when it is heard from again, so it is judged as if it
        had never been compacted -- a stale or offline alert is exactly what
        an idle device should keep showing. Parked devices count toward
        ``max_devices``: when the device given up for the limit is a parked
        one, its record is dropped and its alerts are resolved with a
        ``clear_reason`` naming the limit (stored and published on the alerts
        topic, logged, counted; not notified, so a flood of device ids cannot
        become a notification storm).
        """
        return self._evict_idle(now_ms) + self._evict_over_limit(now_ms)

    def _evict_idle(self, now_ms: int) -> list[AlertChange]:
        """Compact the devices not heard from for ``device_idle_s``: the
        least recently heard first, so this costs the devices compacted."""
        out: list[AlertChange] = []
        horizon = now_ms - self._idle_ms
        heard = self._heard
        self._peak = max(self._peak, len(self._devices))
        for _ in range(_COMPACT_PER_TICK):
            if not heard:
                break
            device_id, last = next(iter(heard.items()))
            if last > horizon:
                break
            out += self._forget(device_id, now_ms)
        kept = len(self._devices)
        if self._peak >= _REPACK_FROM and kept * 4 < self._peak:
            # Most devices went idle: give back the dict tables sized for them
            # (a copy of what is left; rare, and linear in what is left).
            self._peak = kept
            self._devices = dict(self._devices)
            self._heard = OrderedDict(self._heard)
            for owner in (self._reorder, self.book, *self._rules):
                repack(owner)
        return out

    def _evict_over_limit(self, now_ms: int) -> list[AlertChange]:
        """Beyond ``max_devices``: give up the devices heard from longest ago."""
        out: list[AlertChange] = []
        heard, parked = self._heard, self._parked
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
            record = _DECODE(self._records.pop(device_id))
            if record[0] is not None:
                self._count_site(record[0], -1)
            if record[-1] is not None:
                self.book.unpark(device_id, record[-1])  # its open alerts, to resolve
            resolved = self.book.resolve_all(
                device_id,
                ts=now_ms,
                reason=f"state evicted: more than rules.max_devices ({limit}) devices",
            )
            self.book.forget(device_id)
            self.evicted_alerts += len(resolved)
            out += resolved
        return out

    def _forget(self, device_id: str, now_ms: int) -> list[AlertChange]:
        """Compact the device (it is no longer heard from): its state becomes
        a compact record, its open alerts stay open in the book ("parked")."""
        last_heard = self._heard.pop(device_id)
        self.evicted += 1
        device = self._devices.get(device_id)
        if device is None:  # known only from a restored alert: nothing but the book
            record: list[Any] = [None, None, None, None, None, False, 0, None, [], None]
            for rule in self._rules:
                rule.forget(device_id, "")
        else:
            released, order = self._reorder.park(device_id)
            out = self._judge_all(released, now_ms)  # readings it held: judged first
            del self._devices[device_id]
            record = [
                device.site,
                device.last_ts,
                device.last_seen_ms,
                device.last_temp,
                device.sensor_id,
                device.offline,
                device.status_ts,
                order,
                [rule.park(device_id, device.site) for rule in self._rules],
                None,
            ]
        record[-1] = self.book.park(device_id)
        self._parked[device_id] = last_heard
        self._records[device_id] = _ENCODE(record)
        return out if device is not None else []

    def _unpark(self, device_id: str) -> Device | None:
        """A compacted device heard from again: its state back from its record,
        as it was when it was compacted (None: it had only a restored alert:
        its book state is back, the device is new)."""
        del self._parked[device_id]
        record: list[Any] = _DECODE(self._records.pop(device_id))
        if record[-1] is not None:
            self.book.unpark(device_id, record[-1])
        if record[0] is None:
            return None
        site, last_ts, last_seen_ms, last_temp, sensor_id, offline, status_ts = record[:7]
        order, states = record[7:9]
        device = Device(
            device_id,
            site,
            self._config.for_device(device_id, site),
            last_ts=last_ts,
            last_seen_ms=last_seen_ms,
            last_temp=last_temp,
            sensor_id=sensor_id,
            offline=offline,
            status_ts=status_ts,
        )
        self._devices[device_id] = device
        if order is not None:
            self._reorder.unpark(device_id, order)
        for rule, state in zip(self._rules, states, strict=True):
            if state is not None:
                rule.unpark(device, state)
        return device

    def _count_site(self, site: str, delta: int) -> None:
        count = self._site_devices.get(site, 0) + delta
        if count > 0:
            self._site_devices[site] = count
        else:
            self._site_devices.pop(site, None)

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
        device = self._devices.get(device_id)
        if device is None and device_id in self._parked:
            device = self._unpark(device_id)
        if now_ms is not None:
            heard = self._heard
            heard[device_id] = now_ms
            heard.move_to_end(device_id)  # most recently heard: last in the scan
        if device is None:
            device = Device(device_id, site, self._config.for_device(device_id, site))
            self._devices[device_id] = device
            self._count_site(site, +1)
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


#: Devices compacted at most per tick (~10 µs each): a fleet falling silent
#: at once is compacted over a few ticks rather than in one long pause.
_COMPACT_PER_TICK: Final = 10_000
#: Fewest devices with full state at which the per-device dicts are repacked.
_REPACK_FROM: Final = 1024
_ENCODE: Final = msgspec.msgpack.Encoder().encode
_DECODE: Final = msgspec.msgpack.Decoder().decode


def _decided(signals: Iterable[Signal | None]) -> list[Signal]:
    return [signal for signal in signals if signal is not None]

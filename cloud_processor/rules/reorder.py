"""The reorder stage: each device's readings back in seq order before the rules.

With two gateways (one MQTT shared subscription) a device's readings can
reach Kafka out of seq order, and the rules judge only a device's newest
reading, so a reading overtaken by the next one would be skipped. Only
readings take seqs (alerts carry none, dropped seqs are announced by a
:class:`~telemetry_contract.Gap`), so a seq above the next expected one means
a lower one is still in flight:

* seq == expected (or the first reading of a device in this process): released
  at once, with any held readings it unblocks -- no delay in the normal,
  in-order case;
* seq > expected: held (at most ``max_held_per_device`` per device,
  ``max_held`` in all) until the missing seqs arrive, a Gap covers them, or
  ``wait_ms`` of processing time has passed at :meth:`ReorderStage.expire`
  (or a bound is hit): then the hole is given up and the held readings are
  released in seq order;
* seq < expected: a seq given up on (or older than the first seen by this
  process) is released as it always was -- late, so only the rules that do not
  need the newest reading see it; a seq already released is a duplicate (QoS 1
  redelivery) and is dropped. A lower seq with a *newer* event time means the
  device's counter restarted: the device's order state starts over.

Every method returns the readings to judge now, in the order to judge them.

>>> from telemetry_contract import Reading
>>> stage = ReorderStage(wait_ms=200, max_held=100, max_held_per_device=10)
>>> def r(seq):
...     return Reading(device_id="d1", sensor_id="host", site="s1", seq=seq,
...                    ts=1_767_225_600_000 + seq * 1000, temp_c=5.0)
>>> [x.seq for x in stage.push(r(1), now_ms=0)]    # first: at once
[1]
>>> [x.seq for x in stage.push(r(3), now_ms=0)]    # overtook seq 2: held
[]
>>> stage.is_held("d1", 3), stage.next_release_ms()
(True, 200)
>>> [x.seq for x in stage.push(r(2), now_ms=10)]   # the hole is filled
[2, 3]
>>> stage.push(r(2), now_ms=20)                    # a duplicate
[]
>>> stage.push(r(5), now_ms=20), [x.seq for x in stage.expire(now_ms=220)]
([], [5])
>>> stage.given_up, stage.take_given_up()
(1, [('d1', 4, 4)])
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from telemetry_contract import Gap, Reading

__all__ = ["ReorderStage"]

#: Ranges of seqs remembered per device (given up on, or covered by a Gap ahead).
_MAX_RANGES: Final = 32
#: Holes kept for :meth:`ReorderStage.take_given_up` between two calls.
_MAX_GIVEN_UP_REPORTED: Final = 1000


@dataclass(slots=True)
class _Order:
    """Reorder state of one device."""

    #: Next seq the rules expect; None until the first reading of this process.
    expected: int | None = None
    #: First seq released by this process: lower seqs were never seen here.
    low: int = 0
    #: Newest event time released (a lower seq with a newer one: a counter restart).
    newest_ts: int | None = None
    #: seq -> (reading, processing time it was held at).
    held: dict[int, tuple[Reading, int]] = field(default_factory=dict)
    #: Inclusive seq ranges below ``expected`` given up on (never released yet);
    #: None until the first (an empty deque costs ~760 bytes, most devices need none).
    skipped: deque[tuple[int, int]] | None = None
    #: Inclusive seq ranges at or above ``expected`` that a Gap says will never come.
    covered: deque[tuple[int, int]] | None = None

    def held_since(self) -> int:
        return min(since for _, since in self.held.values())

    def was_skipped(self, seq: int) -> bool:
        """Whether ``seq`` was given up on; forget it (it is being released now)."""
        skipped = self.skipped
        for i, (first, last) in enumerate(skipped or ()):
            if first <= seq <= last:
                assert skipped is not None
                del skipped[i]
                if first < seq:
                    skipped.append((first, seq - 1))
                if seq < last:
                    skipped.append((seq + 1, last))
                return True
        return False

    def pack(self) -> list[object]:
        """What outlives an eviction (nothing is held then), as plain data."""
        return [
            self.expected,
            self.low,
            self.newest_ts,
            [list(r) for r in self.skipped or ()],
            [list(r) for r in self.covered or ()],
        ]

    @classmethod
    def unpack(cls, state: Any) -> _Order:
        """The order state :meth:`pack` gave (as decoded from msgpack)."""
        expected, low, newest_ts, skipped, covered = state
        order = cls(expected, low, newest_ts)
        for first, last in skipped:
            order.skipped = _added(order.skipped, (first, last))
        for first, last in covered:
            order.covered = _added(order.covered, (first, last))
        return order


def _added(ranges: deque[tuple[int, int]] | None, seqs: tuple[int, int]) -> deque[tuple[int, int]]:
    """``ranges`` (created on first use) with ``seqs`` appended."""
    if ranges is None:
        ranges = deque(maxlen=_MAX_RANGES)
    ranges.append(seqs)
    return ranges


class ReorderStage:
    """Per-device hold of readings that overtook a lower seq (see the module doc)."""

    def __init__(self, *, wait_ms: int, max_held: int, max_held_per_device: int) -> None:
        self._wait_ms = wait_ms
        self._max_held = max_held
        self._max_held_per_device = max_held_per_device
        self._orders: dict[str, _Order] = {}
        #: Devices holding readings, and how many are held in all.
        self._holding: set[str] = set()
        self._held_total = 0
        #: Seqs this stage stopped waiting for, since the start (a metric).
        self.given_up = 0
        #: ``(device_id, first_seq, last_seq)`` of each hole given up since the
        #: caller last took them: seqs no Gap announced, lost on the way unless
        #: they turn up late.
        self._given_up_ranges: list[tuple[str, int, int]] = []

    # -- inputs ------------------------------------------------------------

    def push(self, reading: Reading, now_ms: int) -> list[Reading]:
        """One reading in; the readings to judge now, in seq order."""
        order = self._orders.get(reading.device_id)
        if order is None:
            order = self._orders[reading.device_id] = _Order()
        out: list[Reading] = []
        seq = reading.seq
        if order.expected is None:
            order.expected, order.low = seq + 1, seq
            self._release(order, reading, out)
        elif seq == order.expected:  # the usual case: in order, nothing held
            order.expected += 1
            self._release(order, reading, out)
            if order.held or order.covered:
                self._drain(reading.device_id, order, out)
        elif seq > order.expected:
            self._hold(reading, order, now_ms, out)
        elif order.newest_ts is not None and reading.ts > order.newest_ts:
            # A lower seq with newer data: the device's seq counter restarted.
            self._give_up(reading.device_id, order, out, everything=True)
            order.expected, order.low = seq + 1, seq
            order.skipped = order.covered = None
            self._release(order, reading, out)
        elif seq < order.low or order.was_skipped(seq):
            self._release(order, reading, out)  # overtaken and given up on: late
        # else: released already, a duplicate
        return out

    def gap(self, gap: Gap) -> list[Reading]:
        """A Gap announces seqs that will never come: stop waiting for them."""
        order = self._orders.get(gap.device_id)
        if order is None or order.expected is None or gap.last_seq < order.expected:
            return []
        order.covered = _added(order.covered, (gap.first_seq, gap.last_seq))
        out: list[Reading] = []
        self._drain(gap.device_id, order, out)
        return out

    def expire(self, now_ms: int) -> list[Reading]:
        """Give up the holes that have waited ``wait_ms``; release what they blocked."""
        out: list[Reading] = []
        for device_id in sorted(self._holding):
            order = self._orders[device_id]
            while order.held and order.held_since() + self._wait_ms <= now_ms:
                self._give_up(device_id, order, out)
        return out

    def release_all(self) -> list[Reading]:
        """Give up every hole and release every held reading (end of a replay)."""
        out: list[Reading] = []
        for device_id in sorted(self._holding):
            self._give_up(device_id, self._orders[device_id], out, everything=True)
        return out

    def park(self, device_id: str) -> tuple[list[Reading], list[object] | None]:
        """Take the device's order state out (compacted: idle): the readings
        it held, to judge now (none, for a device idle longer than
        ``wait_ms``), and what :meth:`unpark` needs to go on exactly where it
        left off (next seq expected, ranges given up on or covered by a Gap)."""
        order = self._orders.get(device_id)
        if order is None:
            return [], None
        released = self.forget(device_id)
        return released, order.pack()

    def unpark(self, device_id: str, state: Any) -> None:
        """Put back what :meth:`park` took out."""
        self._orders[device_id] = _Order.unpack(state)

    def forget(self, device_id: str) -> list[Reading]:
        """Drop the device's order state (evicted); the readings it held, to judge now."""
        order = self._orders.pop(device_id, None)
        if order is None:
            return []
        out: list[Reading] = []
        self._give_up(device_id, order, out, everything=True)
        self._holding.discard(device_id)
        return out

    def drop(self, device_id: str) -> None:
        """Drop the device's order state and the readings it held, unjudged
        (its partition moved to another processor, which reads them again)."""
        order = self._orders.pop(device_id, None)
        if order is not None:
            self._held_total -= len(order.held)
            self._holding.discard(device_id)

    # -- state -------------------------------------------------------------

    def is_held(self, device_id: str, seq: int) -> bool:
        """Whether a reading is held (not yet released to the rules)."""
        order = self._orders.get(device_id)
        return order is not None and seq in order.held

    @property
    def held_count(self) -> int:
        """Readings held, over all devices."""
        return self._held_total

    def next_release_ms(self) -> int | None:
        """Processing time at which the oldest held reading is released (None: none held)."""
        if not self._holding:
            return None
        return min(self._orders[i].held_since() for i in self._holding) + self._wait_ms

    def take_given_up(self) -> list[tuple[str, int, int]]:
        """The holes given up since the last call, as ``(device_id, first_seq, last_seq)``.

        At most 1,000 are kept between two calls (:attr:`given_up` counts every seq).
        """
        out, self._given_up_ranges = self._given_up_ranges, []
        return out

    # -- moves -------------------------------------------------------------

    @staticmethod
    def _release(order: _Order, reading: Reading, out: list[Reading]) -> None:
        if order.newest_ts is None or reading.ts >= order.newest_ts:
            order.newest_ts = reading.ts
        out.append(reading)

    def _hold(self, reading: Reading, order: _Order, now_ms: int, out: list[Reading]) -> None:
        if reading.seq in order.held:
            return  # a duplicate of a held reading
        order.held[reading.seq] = (reading, now_ms)
        self._held_total += 1
        self._holding.add(reading.device_id)
        if self._wait_ms <= 0 or len(order.held) > self._max_held_per_device:
            self._give_up(reading.device_id, order, out)
        while self._held_total > self._max_held:
            oldest = min(self._holding, key=lambda i: self._orders[i].held_since())
            self._give_up(oldest, self._orders[oldest], out)

    def _give_up(
        self, device_id: str, order: _Order, out: list[Reading], *, everything: bool = False
    ) -> None:
        """Stop waiting for the lowest hole (or all holes); release what it blocked."""
        while order.held and order.expected is not None:
            first = min(order.held)
            if first > order.expected:
                order.skipped = _added(order.skipped, (order.expected, first - 1))
                self.given_up += first - order.expected
                if len(self._given_up_ranges) < _MAX_GIVEN_UP_REPORTED:
                    self._given_up_ranges.append((device_id, order.expected, first - 1))
                order.expected = first
            elif first < order.expected:  # never held that way; judged rather than stranded
                self._held_total -= 1
                self._release(order, order.held.pop(first)[0], out)
            self._drain(device_id, order, out)
            if not everything:
                break

    def _drain(self, device_id: str, order: _Order, out: list[Reading]) -> None:
        """Release held readings from ``expected`` on while nothing is missing."""
        while order.expected is not None:
            held = order.held.pop(order.expected, None)
            if held is not None:
                self._held_total -= 1
                order.expected += 1
                self._release(order, held[0], out)
                continue
            covered = order.covered or ()
            cover = next((c for c in covered if c[0] <= order.expected <= c[1]), None)
            if cover is None:
                break
            assert order.covered is not None
            order.covered.remove(cover)
            order.expected = cover[1] + 1
            for seq in sorted(s for s in order.held if s < order.expected):
                # Held, yet a Gap says it was dropped: judge it anyway, in order.
                self._held_total -= 1
                self._release(order, order.held.pop(seq)[0], out)
        if not order.held:
            self._holding.discard(device_id)

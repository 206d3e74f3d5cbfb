"""One-minute windows folded in memory from the readings this processor stores (pure).

The recompute path (:mod:`~cloud_processor.aggregates`) asks the search server
for every window a commit interval touched: a refresh, then a composite
aggregation with a ``top_hits`` per window. At 100,000 devices sending once a
minute that is ~8,000 windows every 5 s, and the processor spent its time
waiting for that query. Here the windows are folded from the readings as
they are stored -- count, min, max, sum, the newest reading -- and written
from memory at the flush; the query is left for the windows this process
cannot have seen whole.

**When a window may be folded.** Its document must come out exactly as the
query would compute it from the readings indices, so every reading the
index holds for it must have gone through this fold, once:

* *Its partition is continuous, or the window resumes from its document.*
  Readings stored by an earlier owner of the partition (another processor,
  or this one before a restart) are not in memory. The first records read
  after an assignment tell: if they start exactly at the offset this process
  last committed (0 for a partition it never committed and that starts at
  0), every record after that commit is read again here, and nobody else
  committed any; the windows are kept. Otherwise the windows of that
  partition are dropped, and a window starting before :data:`SINCE_MARGIN_MS`
  after now is folded from nothing and, at the next flush, *seeded* with its
  stored document (:meth:`LiveWindows.unseeded`, :meth:`LiveWindows.seed`:
  one multi-get, no refresh, no aggregation). That document holds every
  reading stored before the earlier owner's last commit, because every
  flush writes its windows before the commit; a reading it stored after
  that commit is read again here and answered 409, which sends the window
  to the query path (below). A document without ``temp_sum`` (an earlier
  release) or one that could not be read sends it there too. Windows
  starting after the margin need no document: the earlier owner stopped
  before now, and the contract refuses readings more than
  :data:`~telemetry_contract.MAX_FUTURE_MS` ahead of processing time, so
  none of its readings falls in them.
* *It was never let go.* A window is dropped from memory once it ended
  ``hold_ms`` before now (:meth:`LiveWindows.evict`); a reading for it after
  that goes to the query path, and so do later ones.
* *The server stored the reading as sent.* A ``create`` answered 201 is
  folded. A 409 is folded only if the window already holds that seq (a
  redelivery of a reading folded here); otherwise it is ambiguous -- an
  earlier attempt of a retried bulk request, or another reading under the
  same ``device:seq`` -- and the window goes to the query path
  (:meth:`LiveWindows.spoil`). A rejected reading spoils its window too.

Everything not folded is returned to the caller as a window to recompute,
so the two paths together cover every window, and each window's document
comes from one of them for as long as it is in memory.

Temperatures are folded as 32-bit floats, as the ``float`` field the query
aggregates: min, max and mean come out the same after rounding.

>>> live = LiveWindows(hold_ms=60_000)
>>> live.check("p0", first_offset=0, now_ms=1_000)      # a partition never read
True
>>> w = 1_767_225_600_000
>>> live.fold("p0", "d1", "s1", seq=1, ts=w + 1_000, temp_c=21.5)
True
>>> live.fold("p0", "d1", "s1", seq=2, ts=w + 31_000, temp_c=22.0)
True
>>> live.fold("p0", "d1", "s1", seq=2, ts=w + 31_000, temp_c=22.0)  # the same again
True
>>> [(a.count, a.temp_min, a.temp_max, a.temp_mean, a.temp_last) for a in live.take_changed()]
[(2, 21.5, 22.0, 21.75, 22.0)]
>>> live.take_changed()
[]

A partition read from elsewhere than this process's last commit: its
windows start over, and each resumes from its stored document at the flush.

>>> live.check("p0", first_offset=5_000, now_ms=w + 40_000)
False
>>> live.fold("p0", "d1", "s1", seq=3, ts=w + 50_000, temp_c=22.5)
True
>>> live.take_changed(), live.unseeded()
([], [('d1', 1767225600000)])
>>> stored = WindowAggregate("d1", "s1", w, 2, 21.5, 22.0, 21.75, 22.0, w + 31_000,
...                          temp_sum=43.5, last_seq=2)
>>> live.seed({("d1", w): stored})
[]
>>> [(a.count, a.temp_mean, a.temp_last, a.last_seq) for a in live.take_changed()]
[(3, 22.0, 22.5, 3)]
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from cloud_processor.aggregates import WINDOW_MS, WindowAggregate, _r, window_start
from telemetry_contract import MAX_FUTURE_MS

__all__ = ["SINCE_MARGIN_MS", "LiveWindows"]

#: After a partition changed hands, windows starting this long after now are
#: the first folded: the contract's limit on future event times, plus a
#: minute for the clocks of two processors that disagree.
SINCE_MARGIN_MS: Final = MAX_FUTURE_MS + 60_000

_F32 = struct.Struct("<f")
_LONG_AGO: Final = -(2**62)

#: A partition (any hashable key).
K = TypeVar("K")


def f32(value: float) -> float:
    """``value`` as the search server keeps it in a ``float`` field.

    >>> f32(21.3)
    21.299999237060547
    """
    return float(_F32.unpack(_F32.pack(value))[0])


@dataclass(slots=True)
class _Fold:
    """One window of one device: what the aggregation query would compute.

    ``seeded`` False: the window's stored document (an earlier owner's) is still
    to be added (:meth:`LiveWindows.seed`); until then this holds only what was
    folded here."""

    owner: object
    site: str
    seqs: set[int]
    count: int
    total: float
    lo: float
    hi: float
    last_ts: int
    last_seq: int
    last_temp: float
    seeded: bool

    def add(self, site: str, seq: int, ts: int, temp_c: float) -> None:
        value = f32(temp_c)
        self.seqs.add(seq)
        self.count += 1
        self.total += value
        self.lo = min(self.lo, value)
        self.hi = max(self.hi, value)
        self._newest(site, ts, seq, temp_c)

    def _newest(self, site: str, ts: int, seq: int, temp_c: float) -> None:
        if (ts, seq) > (self.last_ts, self.last_seq):  # the query sorts @timestamp, seq desc
            self.site, self.last_ts, self.last_seq, self.last_temp = site, ts, seq, temp_c

    def absorb(self, stored: WindowAggregate) -> None:
        """Add the readings a stored document counts (none of them folded here)."""
        self.count += stored.count
        self.total += stored.temp_sum
        # Rounded to 4 decimals already; rounding again gives what rounding the
        # unrounded minimum would.
        self.lo = min(self.lo, stored.temp_min)
        self.hi = max(self.hi, stored.temp_max)
        self._newest(stored.site, stored.last_ts, stored.last_seq, stored.temp_last)
        self.seeded = True

    def aggregate(self, device_id: str, start: int) -> WindowAggregate:
        return WindowAggregate(
            device_id=device_id,
            site=self.site,
            start=start,
            count=self.count,
            temp_min=_r(self.lo),
            temp_max=_r(self.hi),
            temp_mean=_r(self.total / self.count),
            temp_last=self.last_temp,
            last_ts=self.last_ts,
            temp_sum=self.total,
            last_seq=self.last_seq,
        )


class LiveWindows(Generic[K]):
    """Windows folded from stored readings, per partition (``owner``); see the module."""

    def __init__(self, *, hold_ms: int) -> None:
        self.hold_ms = hold_ms
        #: window start -> device -> fold (None: spoiled, recomputed by query
        #: until it is evicted). Few starts are live at once, so eviction
        #: looks at a handful of keys, not at every window.
        self._windows: dict[int, dict[str, _Fold | None]] = {}
        self._changed: set[tuple[str, int]] = set()
        #: (device, start) of the folds not seeded yet (see :meth:`seed`).
        self._unseeded: set[tuple[str, int]] = set()
        #: Earliest window start that may be folded, per partition checked
        #: since its assignment.
        self._since: dict[K, int] = {}
        #: The same for partitions revoked, until they are checked again.
        self._kept: dict[K, int] = {}
        #: The next offset to read after this process's last commit, per partition.
        self._committed: dict[K, int] = {}
        self._horizon = _LONG_AGO  # windows ending at or before it are gone

    def __len__(self) -> int:
        """Windows in memory (spoiled ones included)."""
        return sum(len(devices) for devices in self._windows.values())

    # -- partitions ----------------------------------------------------------------

    def checked(self, owner: K) -> bool:
        """Whether ``owner``'s continuity was checked since it was last revoked."""
        return owner in self._since

    def check(self, owner: K, first_offset: int, now_ms: int) -> bool:
        """The first records of ``owner`` since its assignment start at
        ``first_offset``: keep its windows (True) or start it over (False)."""
        kept = self._kept.pop(owner, _LONG_AGO)
        if first_offset == self._committed.get(owner, 0):
            self._since[owner] = kept
            return True
        self.drop(owner)
        self._since[owner] = now_ms + SINCE_MARGIN_MS
        return False

    def revoked(self, owners: Iterable[K]) -> None:
        """``owners`` were taken away: checked again if they come back."""
        for owner in owners:
            since = self._since.pop(owner, None)
            if since is not None:
                self._kept[owner] = since

    def committed(self, offsets: Mapping[K, int]) -> None:
        """This process committed ``offsets`` (next offset to read, per partition)."""
        self._committed.update(offsets)

    def drop(self, owner: K) -> None:
        """Forget every window of ``owner``."""
        for start, devices in list(self._windows.items()):
            gone = [d for d, f in devices.items() if f is not None and f.owner == owner]
            for device in gone:
                del devices[device]
                self._changed.discard((device, start))
                self._unseeded.discard((device, start))
            if not devices:
                del self._windows[start]

    # -- readings -------------------------------------------------------------------

    def accepts(self, owner: K, ts: int) -> bool:
        """Whether a reading of ``owner`` at ``ts`` may start or join a fold."""
        start = window_start(ts)
        return owner in self._since and start + WINDOW_MS > self._horizon

    def fold(
        self, owner: K, device_id: str, site: str, *, seq: int, ts: int, temp_c: float
    ) -> bool:
        """Fold a reading the server stored (201); False: recompute its window by query."""
        start = window_start(ts)
        devices = self._windows.get(start)
        if devices is not None and device_id in devices:
            fold = devices[device_id]
            if fold is None:
                return False  # spoiled
            if seq in fold.seqs:
                return True  # a reading folded already (redelivered)
        else:
            if not self.accepts(owner, ts):
                return False
            seeded = start >= self._since[owner]
            fold = _Fold(
                owner, site, set(), 0, 0.0, float("inf"), float("-inf"), ts, seq, temp_c, seeded
            )
            self._windows.setdefault(start, {})[device_id] = fold
            if not seeded:
                self._unseeded.add((device_id, start))
        fold.add(site, seq, ts, temp_c)
        self._changed.add((device_id, start))
        return True

    def holds(self, device_id: str, seq: int, ts: int) -> bool:
        """Whether this reading is folded already (a 409 that is no news)."""
        devices = self._windows.get(window_start(ts))
        fold = devices.get(device_id) if devices is not None else None
        return fold is not None and seq in fold.seqs

    def spoil(self, device_id: str, ts: int) -> None:
        """The window of this reading is recomputed by query from now on."""
        start = window_start(ts)
        if start + WINDOW_MS <= self._horizon:
            return  # let go already: the query path has it anyway
        self._windows.setdefault(start, {})[device_id] = None
        self._changed.discard((device_id, start))
        self._unseeded.discard((device_id, start))

    # -- flush -----------------------------------------------------------------------

    def unseeded(self) -> list[tuple[str, int]]:
        """(device, start) of the windows whose stored documents :meth:`seed` needs."""
        return sorted(self._unseeded, key=lambda k: (k[1], k[0]))

    def seed(
        self, stored: Mapping[tuple[str, int], WindowAggregate | None]
    ) -> list[tuple[str, str, int]]:
        """Add the stored documents of :meth:`unseeded` windows: None, there is none;
        a window missing from ``stored`` is unknown (the document could not be
        read, or lacks ``temp_sum``) and goes to the query path. Returns those
        as (device, site, start), to recompute."""
        spoiled: list[tuple[str, str, int]] = []
        for device, start in self.unseeded():
            fold = self._windows[start][device]
            assert fold is not None
            if (device, start) not in stored:
                spoiled.append((device, fold.site, start))
                self.spoil(device, start)
                continue
            doc = stored[(device, start)]
            if doc is None:
                fold.seeded = True
            else:
                fold.absorb(doc)
            self._unseeded.discard((device, start))
        return spoiled

    def take_changed(self) -> list[WindowAggregate]:
        """The windows folded into since the last call, as documents to write
        (call after :meth:`seed`: a window not seeded yet is not written)."""
        out: list[WindowAggregate] = []
        waiting: set[tuple[str, int]] = set()
        for device_id, start in sorted(self._changed, key=lambda k: (k[1], k[0])):
            fold = self._windows[start][device_id]
            if fold is not None and fold.seeded:
                out.append(fold.aggregate(device_id, start))
            elif fold is not None:
                waiting.add((device_id, start))
        self._changed = waiting
        return out

    def evict(self, now_ms: int) -> None:
        """Let go of windows that ended ``hold_ms`` before ``now_ms`` (call after
        :meth:`take_changed`, so that nothing folded is lost)."""
        self._horizon = max(self._horizon, now_ms - self.hold_ms)
        for start in [s for s in self._windows if s + WINDOW_MS <= self._horizon]:
            for device in self._windows.pop(start):
                self._changed.discard((device, start))
                self._unseeded.discard((device, start))

"""Whether the cooling still pulls the temperature down (part of ``thermal``; pure).

A refrigeration unit or a server room's air conditioning that works pulls
the air down again and again: the compressor's on-phase, the HVAC's cycle,
the controller cooling through a door opening. A failed compressor, a
stopped HVAC or a power cut on a UPS-fed server room only warm. So, per
probe and per height level above the median (the baseline; the levels of
the excursions, 0 to 24 °C), the time spent above that level since the
temperature last *fell* (by :data:`FALL_C`, four DS18B20 steps, from its highest reading since
the previous fall) is measured; a stretch that ends in a fall is learned,
grouped by the highest level it reached (a defrost's stretches apart from
an off-cycle's). A stretch in progress is compared with the learned ones
that got at most :data:`_HEIGHT_MARGIN` levels higher: a defrost, which
warms fast, soon counts among the defrosts; a compressor failure, which
warms slowly, stays among the off-cycles and door openings of its height.
Beyond their longest time at some level (times ``factor`` plus twice
``slack_s``: this check is a second chance at every false alarm, so its
margin is wider), the cooling has stopped, provided the temperature is
still rising (a new highest reading within :data:`_FLAT_S`: a probe frozen
at one value is a sensor fault, reported by the stuck check, not a warm
room). A defrost on its timer's schedule is left to the excursion shapes
(the caller does not judge it).

>>> w = CoolingWatch()
>>> learn = {"judge": False, "normal": True, "factor": 1.75, "slack_s": 150.0}
>>> watch = {**learn, "judge": True}
>>> for i in range(3 * 90):                 # 45 min of a sawtooth, 1 °C above the median at its top
...     _ = w.step((i % 90) / 90, (i % 90) / 90, 10.0, **learn)
>>> {top: [round(s) for s in d[:3]] for top, d in w.longest.items()}   # s above 0, .25, .5 °C
{2: [890, 670, 450]}
>>> flags = [w.step(1.0, 1.0, 10.0, **watch) for i in range(600)]
>>> flags.index(True) * 10 // 60             # no fall, above the top it reached: after 2 × slack
5
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Final

__all__ = ["FALL_C", "CoolingWatch"]

#: A fall: this far (°C, four DS18B20 steps of 0.0625) below the highest reading since
#: the last fall. Noise (0.03 °C) and the quantization alone do not make one.
FALL_C: Final = 0.25
#: The height levels (°C above the median), the same as the excursions' (above the band).
_LEVELS: Final = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)
_N: Final = len(_LEVELS)
#: A stretch whose highest reading is older than this is no longer warming: not judged.
_FLAT_S: Final = 600.0
#: A stretch is compared with the learned ones that got at most this many levels higher.
_HEIGHT_MARGIN: Final = 3


class CoolingWatch:
    """Time above the median since the last fall, and the longest learned per height."""

    __slots__ = ("above_s", "flat_s", "longest", "peak", "seen_s", "top")

    def __init__(self) -> None:
        self.peak: float | None = None
        #: Seconds since the peak last rose: a flat line (a probe about to be found stuck)
        #: is not a room warming up.
        self.flat_s = 0.0
        #: Seconds of readings seen (a watch added to an older saved state learns first).
        self.seen_s = 0.0
        #: Per level: seconds spent above it since the last fall; the highest level reached.
        #: (Levels start at the median: a leak holds the air at the cut-in, inside the band.)
        self.above_s = [0.0] * _N
        self.top = -1
        #: Per highest level reached (a defrost's stretches apart from an off-cycle's), per
        #: level: the longest time above it without a fall in normal operation.
        self.longest: dict[int, list[float]] = {}

    def step(
        self,
        x: float,
        depth: float,
        dt: float,
        *,
        judge: bool,
        normal: bool,
        factor: float,
        slack_s: float,
        learning: bool = False,
    ) -> bool:
        """One reading ``x``, ``depth`` °C above the median, ``dt`` s after the last.

        A stretch that ends in a fall is learned while ``normal`` (no other
        anomaly under way), unless ``judge`` (after the learning period) found
        it too long; while ``learning``, so is the stretch in progress (one
        that outlasts the learning period was normal too). With ``judge``,
        returns whether the stretch in progress outlasts every normal one of
        its height.
        """
        self.seen_s += dt
        peak = self.peak
        if peak is None or x > peak:
            self.peak = peak = x
            self.flat_s = 0.0
        else:
            self.flat_s += dt
        if x <= peak - FALL_C:
            if normal and not (judge and self._outlasts(factor, slack_s)):
                self.learn()
            self.restart(x)
            return False
        if depth > 0:
            above = self.above_s
            n = bisect_right(_LEVELS, depth)
            for i in range(n):
                above[i] += dt
            if n - 1 > self.top:
                self.top = n - 1
        if learning and normal:
            self.learn()
        return judge and self._outlasts(factor, slack_s)

    def learn(self) -> None:
        """The stretch in progress was normal: its times join the longest ones."""
        if self.top >= 0:
            old = self.longest.get(self.top, self.above_s)
            self.longest[self.top] = [max(a, b) for a, b in zip(old, self.above_s, strict=True)]

    def restart(self, x: float | None = None) -> None:
        """Start a new stretch at ``x`` (None: at the next reading)."""
        self.peak = x
        self.above_s = [0.0] * _N
        self.top = -1

    def _outlasts(self, factor: float, slack_s: float) -> bool:
        if self.flat_s > _FLAT_S:
            return False  # not warming (any more)
        top, above = self.top, self.above_s
        like = [d for t, d in self.longest.items() if t <= top + _HEIGHT_MARGIN]
        for i in range(top + 1):
            allowed = max((d[i] for d in like), default=0.0)
            if above[i] > allowed * factor + 2 * slack_s:
                return True
        return False

"""``thermal``: the default detector for equipment temperatures (pure, no I/O).

Built for one job: a probe in a freezer, cold room, fridge or server room,
sampled every 1 to 60 s, that must stay quiet through normal operation
(compressor cycling, defrosts, doors opened for loading, day and night) from
its first day, and speak up within minutes of a fault. Everything is in
seconds and degrees, never in readings, so it behaves the same at any
sampling interval.

* **Baseline, not range.** The model tracks the median of the temperature
  and the spread around it with frugal streaming quantiles (Ma, Muthukrishnan
  and Sandler, 2013): each reading moves them by at most ``baseline_c_per_h``
  times the time since the last one. Slow drift (a server room following the
  seasons, a probe ageing) is followed; a fault that warms faster than that
  is left behind and shows. A new extreme of the range is not news: only the
  distance from the baseline counts.
* **Excursions and their envelope.** Readings beyond the band (median ±
  spread) form an *excursion* (up or down). For each excursion the model
  measures, per height level above the band (:data:`LEVELS`, 0.25 to 24 °C),
  how long it stayed above that level and when it first got there: its
  height × duration shape. A normal excursion (a defrost, a door opening,
  the afternoon in a server room) teaches its shape when it ends; shapes
  that reached the same top level are merged into one envelope (the longest
  time per level, the latest arrival), so memory is bounded (2 × 13 shapes)
  and recurring excursions are learned however often they come back.
* **Judging.** An excursion in progress is normal while some learned shape
  still *covers* it: at every level it has not stayed longer than that shape
  did (times ``factor`` plus ``slack_s``, one level lower: a height margin),
  and it has not been slower than that shape in reaching its levels (a slow
  warm-up that a fast defrost would long have passed is a compressor
  failure, not a defrost), nor faster than the fastest of its excursions
  (minus ``slack_s``, divided by ``factor``: a fridge's door left open warms
  faster than its off-cycle defrost ever does). A shape that stops covering never covers this
  excursion again; when none is left the excursion is anomalous until it
  ends, and it is not learned (a fault must not become normal). An
  excursion shorter than ``slack_s`` is never an anomaly.
* **Cooling that stops.** A working cooling pulls the temperature down
  again and again; a stretch without a fall that lasts longer above the
  median than any normal one of its height (off-cycles, doors, defrosts
  apart, :mod:`edge_agent.detectors.cooling`) makes the warm excursion
  anomalous: a compressor that failed in a fridge, a stuck defrost heater,
  a refrigerant leak that holds the air at the cut-in and lets it creep up.
* **Seasons.** Defrosts come on the controller's timer: when the excursions
  that reached a height started at whole multiples of one period for half a
  day, that shape covers only an excursion starting on schedule (within 3 %
  of the period plus 15 min); off schedule it covers its low part for at
  most 10 min. A door left open between defrosts is judged against the door
  openings, not the defrosts. A normal excursion that started off schedule
  (a burst of door openings as high as a defrost) marks its shape as one
  that may come at any time. Day and night (a server room's afternoon) are
  learned as shapes too, without a period.
* **Silences.** Time without readings does not count as time spent beyond
  the band (at most :data:`_MAX_STEP_S` per reading). After an hour without
  any reading (a power cut that stopped the agent too) an excursion found
  has no start to match a shape by: only ``slack_s`` covers it. Readings
  that were no temperature (a sensor fault, see :meth:`ThermalModel.missed`)
  are no such silence.
* **Learning period.** For ``learning_h`` of readings (saved with the state,
  so a restart does not begin again; a clock set by NTP later does not end
  it) the model only learns; the agent's hard limits still alarm.
* **Sensor faults.** A change of more than the profile's ``max_step_c``
  against the last minute's mean is faster than air in a room with thermal
  mass can move: the probe itself moved (pulled into room air). That is
  reported as the fault ``implausible_step`` until the reading comes back
  near the baseline it left, never as a temperature anomaly; steady at its new
  level 90 min (or a longer ``defrost_delay_s``), it is the room (limits judge meanwhile).
* **Calibration.** One knob as the user thinks of it,
  ``target_false_alarms_per_week``, sets ``factor`` and ``slack_s``
  (:func:`margins`): a lower target means wider margins, hence slower
  detection. ``docs/benchmarks.md`` shows the rate it gives on simulated
  weeks of normal operation, and a unit test pins it.

>>> from edge_agent.profiles import PROFILES
>>> def learned(profile):
...     m = build(check(DEFAULTS), PROFILES[profile])
...     for i in range(25 * 360):              # 25 h every 10 s: a compressor's sawtooth
...         v = m.observe_at(i * 10_000, 3.0 + (i % 90) / 90)
...     return m, v
>>> m, v = learned("generic")
>>> v[0] is not None, v[1]                    # learned, judging, normal
(True, False)
>>> t = 25 * 3_600_000
>>> flags = [m.observe_at(t + k * 10_000, 9.0)[1] for k in range(1, 61)]
>>> flags[0], flags[-1]                       # warmer: 10 s on, 10 min on
(False, True)
>>> m, _ = learned("cold_room")               # air in a cold room cannot jump 5.5 °C in 10 s
>>> m.observe_at(t, 9.0)[2]
'implausible_step'
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from itertools import pairwise
from typing import Final

from edge_agent.detectors.base import Param, check_range
from edge_agent.detectors.cooling import CoolingWatch
from edge_agent.profiles import Profile

__all__ = ["DEFAULTS", "LEVELS", "ThermalModel", "build", "check", "margins"]

#: Default parameters (``threshold`` and ``warmup`` are common to every detector:
#: a score of 1 means "beyond every learned envelope"; learning is by time,
#: ``learning_h``, so ``warmup`` is not used).
DEFAULTS: Final[dict[str, Param]] = {
    "threshold": 1.0,
    "warmup": 1,
    "target_false_alarms_per_week": 0.5,
    "learning_h": 24.0,
    "baseline_c_per_h": 0.1,
    "end_after_s": 180.0,
}

#: Height levels (°C beyond the band) at which an excursion's duration is measured.
LEVELS: Final = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)
_N: Final = len(LEVELS)
#: The band is never narrower than two DS18B20 steps (0.0625 °C each) of noise.
_MIN_BAND_C: Final = 0.125
#: Time constant of the "last minute" mean the step check compares with.
_FAST_TAU_S: Final = 60.0
#: The longest sampling interval supported; a longer silence counts as this long.
_MAX_STEP_S: Final = 60.0
#: An excursion found after this long without readings is judged by the slack alone.
_BLIND_GAP_S: Final = 3600.0
#: After this long without a temperature the cooling watch starts a new stretch.
_NO_TEMPERATURE_MS: Final = 600_000
#: After install the baseline moves faster (this many °C/h, halving every hour) to find
#: the equipment's level within the first hours.
_BOOT_C_PER_H: Final = 20.0


#: Off its schedule, a periodic shape still covers its low levels (up to 0.5 °C) for
#: up to 10 min: the small excursions that happen to be rare for half a day stay normal.
_OFF_SEASON_TOP: Final = 2
_OFF_SEASON_MAX_S: Final = 600.0
#: Starts of excursions remembered per level to find a period, and the time they
#: must span (half a day, working hours included, so that doors had their chance).
_PERIOD_SAMPLES: Final = 4
_PERIOD_SPAN_MS: Final = 12 * 3_600_000
#: Gaps within this fraction of whole multiples of the shortest are a period (a timer).
_PERIOD_JITTER: Final = 0.1
#: Shorter gaps are not a defrost period.
_MIN_PERIOD_MS: Final = 1_800_000
#: A periodic excursion may start this fraction of its period plus this long off schedule.
_SEASON_TOL: Final = 0.03
_SEASON_TOL_MS: Final = 900_000


def margins(target_false_alarms_per_week: float) -> tuple[float, float]:
    """``(factor, slack_s)`` for a target rate: monotone, wider for a lower target.

    ``k = (0.5 / target) ** 0.3``; ``factor = 1 + 0.75 k``; ``slack_s = 150 k``.
    At the default 0.5 per week: durations up to 1.75 × the learned ones plus
    2.5 min. The constants are the calibration: on the simulated corpus they
    give at most 0.5 false alarms per device-week per profile at the
    default (docs/benchmarks.md), and ``tests/unit/test_edge_thermal.py``
    fails when a change raises that rate.

    >>> margins(0.5), margins(0.05)[0] > 1.75, margins(5.0)[1] < 150
    ((1.75, 150.0), True, True)
    """
    k = (0.5 / target_false_alarms_per_week) ** 0.3
    return 1.0 + 0.75 * k, 150.0 * k


class _Shape:
    """The envelope of the normal excursions that reached the same top level."""

    __slots__ = ("aperiodic", "count", "dur", "early", "reach")

    def __init__(self, dur: list[float], reach: list[float | None]) -> None:
        self.dur = dur  # seconds above each level
        self.reach = reach  # seconds from the start to each level (None: not reached)
        self.early = list(reach)  # the earliest of them to reach each level
        self.count = 1
        #: One of its excursions started off the schedule of its height: not a timer's.
        self.aperiodic = False

    def merge(self, dur: list[float], reach: list[float | None]) -> None:
        self.dur = [max(a, b) for a, b in zip(self.dur, dur, strict=True)]
        self.reach = [
            None if a is None or b is None else max(a, b)
            for a, b in zip(self.reach, reach, strict=True)
        ]
        self.early = [
            b if a is None else a if b is None else min(a, b)
            for a, b in zip(getattr(self, "early", reach), reach, strict=True)
        ]
        self.count += 1


class _Cover:
    """One learned shape (or none) against the excursion in progress."""

    __slots__ = ("allowed", "deadlines", "learned", "next", "soonest", "timed")

    def __init__(
        self,
        shape: _Shape | None,
        factor: float,
        slack: float,
        in_season: bool = True,
        timed: bool = False,
    ) -> None:
        self.learned = shape is not None and in_season
        #: A timer's shape (a defrost) on its schedule.
        self.timed = self.learned and timed
        #: Per level: reaching it sooner than this (s) is faster than the shape ever was.
        self.soonest: list[float] | None = None
        if shape is None:  # the null shape: anything, for slack seconds
            self.allowed = [slack] * _N
            self.deadlines: list[tuple[float, int]] = []
        elif not in_season:  # its low part only, briefly: a periodic shape off its schedule
            d = shape.dur
            self.allowed = [
                min(d[i] * factor, _OFF_SEASON_MAX_S) + slack if i <= _OFF_SEASON_TOP else slack
                for i in range(_N)
            ]
            self.deadlines = []
        else:
            d = shape.dur
            # One level lower: the height margin.
            self.allowed = [d[max(i - 1, 0)] * factor + slack for i in range(_N)]
            self.deadlines = sorted(
                (r * factor + slack, max(i - 1, 0))
                for i, r in enumerate(shape.reach)
                if r is not None
            )
            early = getattr(shape, "early", None)  # a shape saved by an older agent: none
            if early is not None:
                self.soonest = [0.0 if e is None else (e - slack) / factor for e in early]
        self.next = 0


class _Excursion:
    """An excursion in progress: its shape so far and the shapes that still cover it."""

    __slots__ = ("below_ms", "covers", "dur", "flagged", "reach", "score", "start_ms", "top")

    def __init__(self, start_ms: int, covers: list[_Cover] | None) -> None:
        self.start_ms = start_ms
        self.dur = [0.0] * _N
        self.reach: list[float | None] = [None] * _N
        self.top = -1
        self.covers = covers  # None: learning, nothing is judged
        self.flagged = False
        self.score = 0.0
        self.below_ms: int | None = None

    def advance(self, ts_ms: int, depth: float, dt: float) -> None:
        """One reading ``depth`` °C beyond the band (<= 0: inside), ``dt`` s after the last."""
        elapsed = (ts_ms - self.start_ms) / 1000.0
        n = bisect_right(LEVELS, depth) if depth > 0 else 0
        dur, reach = self.dur, self.reach
        for i in range(n):
            dur[i] += dt
            if reach[i] is None:
                reach[i] = elapsed
        new = self.top + 1  # the first level reached now, if any
        if n - 1 > self.top:
            self.top = n - 1
        covers = self.covers
        if covers is None or self.flagged:
            return
        alive: list[_Cover] = []
        best = float("inf")
        for c in covers:
            allowed = c.allowed
            worst = 0.0
            for i in range(n):
                ratio = dur[i] / allowed[i]
                if ratio > worst:
                    worst = ratio
            dl = c.deadlines
            while c.next < len(dl) and dl[c.next][0] <= elapsed:
                need = reach[dl[c.next][1]]
                if need is None or need > dl[c.next][0]:
                    worst = 2.0  # slower than this shape ever was
                    break
                c.next += 1
            soonest = getattr(c, "soonest", None)  # None in a cover saved by an older agent
            if soonest is not None:
                for i in range(new, n):
                    if elapsed < soonest[i]:
                        worst = 2.0  # faster than this shape ever was: a door, not a defrost
            if worst <= 1.0:
                alive.append(c)
                best = min(best, worst)
        self.covers = alive
        if alive:
            self.score = best
        else:
            self.flagged = True
            self.score = 1.0


class ThermalModel:
    """Baseline, band, excursion envelopes and the step check of one probe (see module)."""

    def __init__(
        self,
        *,
        threshold: float,
        target: float,
        learning_s: float,
        baseline_c_per_h: float,
        end_after_s: float,
        max_step_c: float,
        settle_s: float = 1800.0,
    ) -> None:
        self.threshold = threshold
        self.factor, self.slack_s = margins(target)
        self.learning_s = learning_s
        self.rate = baseline_c_per_h / 3600.0
        self.end_after_ms = end_after_s * 1000.0
        self.max_step_c = max_step_c
        self.learned_s = 0.0
        self.settle_ms = settle_s * 1000.0
        #: Wall-clock time (ms) of the first reading.
        self.started_ms: int | None = None
        self.last_ms = 0
        self.median = 0.0
        self.spread = 0.0
        self.fast = 0.0
        self.fault = ""
        self.anchor = 0.0
        #: The readings before the next one were no temperatures (see :meth:`missed`),
        #: and the agent was off before them.
        self.resync = False
        self.blind = False
        self.shapes: tuple[dict[int, _Shape], dict[int, _Shape]] = ({}, {})
        #: Per direction and level: when the last learned excursions reaching it started.
        self.starts: tuple[dict[int, list[int]], dict[int, list[int]]] = ({}, {})
        self.excursions: list[_Excursion | None] = [None, None]
        self.cooling = CoolingWatch()

    #: A state saved before the cooling watch existed learns one from its next reading.
    cooling: CoolingWatch | None = None
    #: When the last reading that was a temperature came (ms).
    last_ok_ms = 0
    #: A step fault ends once the reading stays near ``level`` (since ``level_ms``) this long.
    settle_ms = 1800_000.0
    level = 0.0
    level_ms = 0
    #: Seconds of readings seen (each gap counted up to a minute): the learning period.
    learned_s: float | None = None

    def missed(self, ts_ms: int) -> None:
        """A reading at ``ts_ms`` that was no temperature (a sensor fault): the agent is
        running, so the next gap is no power cut, but the next step is not judged."""
        if self.started_ms is not None:
            if ts_ms - self.last_ms > _BLIND_GAP_S * 1000:
                self.blind = True  # silent before this bad reading too: the agent was off
            self.last_ms = max(self.last_ms, ts_ms)
            self.resync = True

    def retune(self, target: float) -> None:
        """A new ``target_false_alarms_per_week``: the learned state stays."""
        self.factor, self.slack_s = margins(target)

    def learning(self, ts_ms: int) -> bool:
        """Whether ``ts_ms`` falls in the learning period."""
        return self.started_ms is None or (self.learned_s or 0.0) < self.learning_s

    def observe_at(self, ts_ms: int, x: float) -> tuple[float | None, bool, str, bool]:
        """Judge and learn one reading: ``(score, anomalous, fault, recognised)``.

        ``score`` is None during the learning period; ``fault`` names a sensor
        fault (the reading is then no temperature); ``recognised`` says the
        reading belongs to an excursion a learned shape still covers (a defrost).
        """
        if self.started_ms is None:
            self.started_ms = self.last_ms = ts_ms
            self.median = self.fast = x
        dt = (ts_ms - self.last_ms) / 1000.0
        if dt < 0:
            dt = 0.0
        self.last_ms = ts_ms
        blind = dt > _BLIND_GAP_S or self.blind
        self.blind = False
        if blind:  # the agent was off (a power cut): what was under way is unknown
            self.excursions = [None, None]
            if self.cooling is not None:
                self.cooling.restart()
        if dt > 2 * _MAX_STEP_S or self.resync:
            # No readings for a while (a sensor fault, a restart): the speed of a change
            # cannot be judged across it, and the silence does not count as time spent
            # out there; an excursion under way goes on being judged.
            self.fast = x
            self.resync = False
        if dt > _MAX_STEP_S:
            dt = _MAX_STEP_S
        # A state saved before reading time was counted starts from its wall-clock age.
        age = max(0.0, (ts_ms - self.started_ms) / 1000.0)
        self.learned_s = age if self.learned_s is None else self.learned_s + dt
        step = x - self.fast
        self.fast += step * dt / (dt + _FAST_TAU_S)
        learning = self.learning(ts_ms)
        if self.fault:
            if abs(x - self.anchor) > self.spread + _MIN_BAND_C:
                if abs(x - self.level) > self.max_step_c / 2:
                    self.level, self.level_ms = x, ts_ms  # still moving
                if ts_ms - self.level_ms < self.settle_ms:
                    return (None if learning else 0.0), False, self.fault, False
            self.fault = ""  # back inside the band it left, or steady out there: the room
            self.fast = x
        elif self.max_step_c and abs(step) > self.max_step_c:
            self.fault = "implausible_step"
            self.anchor, self.level, self.level_ms = self.median, x, ts_ms
            self.excursions = [None, None]
            return (None if learning else 0.0), False, self.fault, False
        band = self.spread if self.spread > _MIN_BAND_C else _MIN_BAND_C
        dev = x - self.median
        flagged = False
        recognised = False
        score = 0.0
        for k, depth in ((0, dev - band), (1, -dev - band)):
            exc = self.excursions[k]
            if exc is None:
                if depth <= 0:
                    continue
                # An excursion already under way after an hour without readings (a power
                # cut that stopped the agent too) has no start to judge its shape by: only
                # the slack covers it. (A sensor fault's shorter gap is not a reason.)
                covers = self._covers(k, learning, ts_ms)
                if blind and covers is not None:
                    covers = covers[:1]
                exc = self.excursions[k] = _Excursion(ts_ms, covers)
            elif exc.covers is None and not learning:
                # Begun while learning and still going: judged from now on, by its start.
                exc.covers = self._covers(k, False, exc.start_ms)
            exc.advance(ts_ms, depth, dt)
            if depth > 0:
                exc.below_ms = None
            elif exc.below_ms is None:
                exc.below_ms = ts_ms
            elif ts_ms - exc.below_ms >= self.end_after_ms:
                self.excursions[k] = None
                if not exc.flagged:
                    self._learn(k, exc)
                continue
            if exc.flagged:
                flagged = True
            elif exc.covers is None or any(c.learned for c in exc.covers):
                recognised = True  # a learned shape, or begun while learning: unknown yet
            score = max(score, exc.score)
        if self._cooling_stopped(ts_ms, x, dev, dt, learning, flagged):
            flagged, score = True, 1.0
        if not flagged:
            self._track(ts_ms, x, dt)
        if learning:
            return None, False, "", False
        return score, flagged and score >= self.threshold, "", recognised

    def _cooling_stopped(
        self, ts_ms: int, x: float, dev: float, dt: float, learning: bool, flagged: bool
    ) -> bool:
        """Whether the air has gone without cooling for longer than ever normally
        (see :mod:`edge_agent.detectors.cooling`); the warm excursion is then anomalous."""
        if self.cooling is None:
            self.cooling = CoolingWatch()
        elif ts_ms - self.last_ok_ms > _NO_TEMPERATURE_MS:
            # No temperature for a while (a stuck or unplugged probe): what the air did
            # meanwhile is unknown, so a stretch without a fall starts again.
            self.cooling.restart()
        self.last_ok_ms = ts_ms
        exc = self.excursions[0]
        # A defrost on its timer's schedule stops the cooling: it is judged by its shape.
        defrost = exc is not None and any(getattr(c, "timed", False) for c in exc.covers or ())
        stopped = self.cooling.step(
            x,
            dev,
            dt,
            judge=not (learning or flagged or defrost) and self.cooling.seen_s >= self.learning_s,
            normal=not flagged,
            factor=self.factor,
            slack_s=self.slack_s,
            learning=learning,
        )
        if stopped and exc is not None:
            exc.flagged, exc.score = True, 1.0
        return stopped

    def _covers(self, k: int, learning: bool, ts_ms: int) -> list[_Cover] | None:
        """The shapes that may cover an excursion starting now (None: learning)."""
        if learning:
            return None
        f, s = self.factor, self.slack_s
        covers = [_Cover(None, f, s)]
        for top, shape in self.shapes[k].items():
            timed = self._period(k, top) is not None
            covers.append(_Cover(shape, f, s, self._in_season(k, top, ts_ms), timed))
        return covers

    def _in_season(self, k: int, top: int, ts_ms: int) -> bool:
        """Whether an excursion reaching ``top`` may start now.

        Excursions that reach a level recur either irregularly (doors: any
        time) or on a timer (defrosts, started by the controller every few
        hours). When the last :data:`_PERIOD_SAMPLES` starts of excursions
        reaching ``top`` or higher span at least :data:`_PERIOD_SPAN_MS` and
        are all whole multiples of one period (within :data:`_PERIOD_JITTER`),
        nothing else reached that height for half a day: only an excursion
        starting near a multiple of that period after the last one may take
        that shape. A door left open between defrosts is then judged against
        the door openings, not against the defrosts.
        """
        period = self._period(k, top)
        if period is None:
            return True
        since = ts_ms - self.starts[k][top][-1]
        n = max(1, round(since / period))
        return abs(since - n * period) <= _SEASON_TOL * period + _SEASON_TOL_MS

    def _period(self, k: int, top: int) -> int | None:
        """The timer period (ms) of the excursions reaching ``top`` (None: irregular)."""
        shape = self.shapes[k].get(top)
        if shape is not None and shape.aperiodic:
            return None
        starts = self.starts[k].get(top)
        if starts is None or len(starts) < _PERIOD_SAMPLES:
            return None
        if starts[-1] - starts[0] < _PERIOD_SPAN_MS:
            return None
        gaps = [b - a for a, b in pairwise(starts)]
        period = min(gaps)
        if period < _MIN_PERIOD_MS:
            return None
        for g in gaps:
            n = round(g / period)
            if n > 8 or abs(g - n * period) > _PERIOD_JITTER * period:
                return None  # irregular: any time
        return period

    def _learn(self, k: int, exc: _Excursion) -> None:
        if exc.top < 0:
            return
        # A normal excursion that started off the schedule of its height (a burst of
        # door openings as high as a defrost) makes its shape one that may come any time.
        off_schedule = not self._in_season(k, exc.top, exc.start_ms)
        starts = self.starts[k]
        for level in range(exc.top + 1):
            seen = starts.setdefault(level, [])
            seen.append(exc.start_ms)
            if len(seen) > _PERIOD_SAMPLES:
                del seen[0]
        shapes = self.shapes[k]
        shape = shapes.get(exc.top)
        if shape is None:
            shape = shapes[exc.top] = _Shape(exc.dur, exc.reach)
        else:
            shape.merge(exc.dur, exc.reach)
        shape.aperiodic = shape.aperiodic or off_schedule

    def _track(self, ts_ms: int, x: float, dt: float) -> None:
        """Move median and spread (frugal quantiles, p = 0.5 and 0.8) by at most rate × dt."""
        assert self.started_ms is not None
        rate = self.rate
        hours = max(0.0, (ts_ms - self.started_ms) / 3_600_000.0)  # the clock may go back
        if hours < 12.0:
            rate += _BOOT_C_PER_H / 3600.0 * 0.5**hours
        s = rate * dt
        if x > self.median:
            self.median += s
        elif x < self.median:
            self.median -= s
        if abs(x - self.median) > self.spread:
            self.spread += 0.8 * s
        else:
            self.spread = max(0.0, self.spread - 0.2 * s)


def check(params: Mapping[str, Param]) -> dict[str, Param]:
    """Range checks of merged, type-checked ``params``; returns them.

    >>> check({**DEFAULTS, "target_false_alarms_per_week": 0})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    edge_agent...DetectorSpecError: ...target_false_alarms_per_week: must be in 0.01..100, got 0
    """
    check_range(params, "target_false_alarms_per_week", 0.01, 100.0)
    check_range(params, "learning_h", 0.0, 720.0)
    check_range(params, "baseline_c_per_h", 0.0, 100.0)
    check_range(params, "end_after_s", 0.0, 3600.0)
    return dict(params)


def build(params: Mapping[str, Param], profile: Profile) -> ThermalModel:
    """The model for checked ``params`` and the equipment ``profile``."""
    return ThermalModel(
        threshold=float(params["threshold"]),
        target=float(params["target_false_alarms_per_week"]),
        learning_s=float(params["learning_h"]) * 3600.0,
        baseline_c_per_h=float(params["baseline_c_per_h"]),
        end_after_s=float(params["end_after_s"]),
        max_step_c=profile.max_step_c,
        settle_s=max(profile.defrost_delay_s, 5400.0),  # the limits guard meanwhile
    )

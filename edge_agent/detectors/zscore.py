"""``zscore``: a fast change-point detector, a reading against its trailing time window.

Each reading is scored against the readings of the last ``window_s`` seconds
(by the reading's time): its distance from their median, in units of their
robust spread (1.4826 × the median absolute deviation), never below the noise
floor ``min_std``. It learns in seconds, so it suits demos, tests, bench rigs
and finding level shifts; it is not the default (``thermal`` is built for
equipment that must stay quiet for weeks).

A slow drift moves the window along with it and is never flagged; a level
shift of a few tenths of °C on a quiet probe is flagged at once. Flagged
readings are not learned (:mod:`edge_agent.detect`), so a shift stays flagged
until the window's last good reading is ``window_s`` old; then the model
re-anchors on the new level (a lasting fault is left to the hard limits,
``alarm.high_c``/``low_c``).

>>> m = build(DEFAULTS)
>>> for i in range(60):
...     m.at(i * 1000)
...     m.learn(4.0 + 0.0625 * (i % 2))
>>> m.at(60_000)
>>> round(m.score(4.0625), 1), round(m.score(4.5), 1)  # one DS18B20 step; a 0.47 °C shift
(0.5, 7.5)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from statistics import median
from typing import Final

from edge_agent.detectors.base import Param, check_range

__all__ = ["DEFAULTS", "MAX_POINTS", "REMOVED_PARAMS", "ZScoreModel", "build", "check"]

#: Default parameters (``threshold`` and ``warmup`` are common to every detector).
#: ``min_std`` is one DS18B20 12-bit step (0.0625 °C): with ``threshold`` 6 a
#: shift of 6 steps (0.375 °C) from a quiet window is flagged.
DEFAULTS: Final[dict[str, Param]] = dict(threshold=6.0, warmup=30, window_s=60.0, min_std=0.0625)

#: Parameters of earlier versions, refused with this reason (the error names the key).
REMOVED_PARAMS: Final[dict[str, str]] = {
    "alpha": (
        "was removed: zscore now scores against a trailing time window; use window_s "
        "(seconds, default 60), see docs/upgrade-notes.md"
    ),
}

#: At most this many readings are kept (bounded memory): a sensor read faster
#: than ``MAX_POINTS / window_s`` per second is judged on its last MAX_POINTS readings.
MAX_POINTS: Final = 1024

#: Fewer good readings than this in the window (a gap, or a shift flagged for a
#: whole window): the reading scores 0 and is learned (the model re-anchors).
MIN_POINTS: Final = 3

#: 1.4826 × MAD estimates the standard deviation of normal noise, robust to outliers.
_MAD_TO_STD: Final = 1.4826


class ZScoreModel:
    """Median and robust spread of the readings of a trailing time window.

    Hand-written rather than river's rolling statistics: those windows count
    readings, this one expires them by their time (a gap in the readings must
    not stretch the window), and a median of at most a few hundred floats
    costs microseconds.
    """

    def __init__(self, window_s: float, min_std: float) -> None:
        self._window_ms = window_s * 1000.0
        self._min_std = min_std
        self._now_ms: float | None = None
        self._times: deque[float] = deque(maxlen=MAX_POINTS)
        self._values: deque[float] = deque(maxlen=MAX_POINTS)

    def at(self, ts_ms: float | None) -> None:
        """The time of the next reading (None: 1 s after the previous one)."""
        if ts_ms is None:
            ts_ms = 0.0 if self._now_ms is None else self._now_ms + 1000.0
        if self._now_ms is not None and ts_ms < self._now_ms:
            self._times.clear()  # the clock stepped back: the window's times mean nothing now
            self._values.clear()
        self._now_ms = ts_ms
        cut = ts_ms - self._window_ms
        while self._times and self._times[0] < cut:
            self._times.popleft()
            self._values.popleft()

    def score(self, x: float) -> float:
        if len(self._values) < MIN_POINTS:
            return 0.0
        centre = median(self._values)
        spread = _MAD_TO_STD * median(abs(v - centre) for v in self._values)
        return abs(x - centre) / max(spread, self._min_std)

    def learn(self, x: float) -> None:
        self._times.append(0.0 if self._now_ms is None else self._now_ms)
        self._values.append(x)


def check(params: Mapping[str, Param]) -> None:
    """Range checks of merged, type-checked ``params``.

    ``min_std`` > 0 keeps the score finite (a constant stream has spread 0);
    ``window_s`` up to 15 min keeps the per-reading median cheap at 1 Hz.
    """
    check_range(params, "window_s", 1.0, 900.0)
    check_range(params, "min_std", 1e-6, 100.0)


def build(params: Mapping[str, Param]) -> ZScoreModel:
    """The model for checked ``params`` (see :func:`edge_agent.detect.check_detector`)."""
    return ZScoreModel(float(params["window_s"]), float(params["min_std"]))

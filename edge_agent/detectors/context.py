"""``context``: a scale-free onset detector for any univariate stream (pure, no I/O).

Built for streams whose scale is not known in advance (the NAB corpus mixes
CPU percentages, tweet counts and machine temperatures) with one
configuration for all. The model

* tracks the range ``[lo, hi]`` of the values it has seen (river's
  ``stats.Min``/``stats.Max``) and quantises values into ``bins`` equal bins
  of that range;
* looks at the stream at several time ``scales``: at scale ``s`` the values
  are averaged over consecutive blocks of ``s`` readings (scale 1: the
  readings themselves), so that slow shapes (a missing daily peak) are as
  visible as fast ones (a spike);
* remembers how often it has *learned* each context: the last ``k`` bins at
  one scale, for every ``k`` in ``orders`` (a bounded dict of at most ``cap``
  contexts, the oldest forgotten first);
* measures the novelty of a reading as ``context_weight`` times
  ``1 / (1 + count)`` averaged over the orders, times the weight of its
  scale (``scale_weights``, one per scale), the highest over the scales
  whose block the reading closes. The middle scale weighs 1 and the
  fastest and slowest a little less (0.97): when several scales find a
  shape new, the middle one's report ranks first, and a novelty met at the
  fastest or slowest scale alone needs the onset memory to have faded a
  little further before it reports. A value beyond the range seen so far by at
  least ``min_excess`` of its width is fully novel (1.0); one that only
  nudges the range is judged by its context like any other (it falls in the
  edge bin), so a noisy stream does not report every new record;
* reports only *onsets*: a reading scores its novelty when that novelty
  exceeds, by at least ``margin``, the highest novelty already met (a memory
  that fades by ``decay`` per reading), and 0 otherwise. Because contexts
  weigh ``context_weight`` < 1, a jump out of the range also quietens pattern
  reports for a while (the gate must fade below ``context_weight`` first).

It implements :class:`edge_agent.detectors.base.Model`. ``score`` moves the stream
on (range, time-scale blocks, onset memory): a reading that happened is part
of the sequence whatever its verdict. ``learn`` *counts* the contexts of the
reading just scored. A reading the agent flags is not learned: the agent
calls :meth:`ContextModel.hold` instead, which keeps its contexts aside,
uncounted, until ``release`` readings in a row have been learned (the alarm
has cleared); while readings keep being flagged they are never counted, so a
pattern that keeps alarming never becomes normal. Being an onset detector,
a fault that goes on is reported at its start; persistent out-of-range
temperatures are the job of the agent's high/low threshold alarms.

Scores lie in [0, 1]; the default ``threshold`` is the one the NAB sweep
chose (``benchmarks/nab``; scores and how to reproduce them in
``docs/benchmarks.md``).

>>> m = build_model(check_params({}))
>>> for i in range(300):
...     m.learn(20.0 + (i % 7) * 0.1)
>>> m.score(20.6) < 0.05          # the familiar pattern goes on
True
>>> m.learn(20.6)
>>> m.score(35.0)                 # far outside everything seen: an onset
1.0
>>> m.hold()                      # flagged by the agent: not learned (yet)
>>> m.score(35.0)                 # the same fault again is not a new onset
0.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from edge_agent.detectors.base import DetectorSpecError, Param

__all__ = ["DEFAULTS", "ContextModel", "build_model", "check_params"]

#: Default parameters (``threshold`` and ``warmup`` are common to every detector);
#: the threshold is the one the NAB sweep chose.
DEFAULTS: Final[dict[str, Param]] = {
    "threshold": 0.755,
    "warmup": 100,
    "bins": 10,
    "orders": "1,2,3,4,6",
    "scales": "1,24,144",
    "cap": 8000,
    "decay": 0.9998,
    "margin": 0.005,
    "min_excess": 0.0075,
    "context_weight": 0.9,
    "scale_weights": "0.97,1,0.97",
    "release": 5,
}

#: At most this many time scales (each is a pass over the contexts on every reading).
MAX_SCALES: Final = 8

#: At most this many flagged readings wait to be learned (see ``ContextModel.hold``).
_MAX_HELD: Final = 64


def _bad(key: str, problem: str) -> ValueError:
    """The ``DetectorSpecError`` (a ValueError) for ``params.<key>``."""
    return DetectorSpecError(f"params.{key}", problem)


def _floats(key: str, text: str, n: int) -> tuple[float, ...]:
    """``n`` comma-separated weights in (0, 1], in the given order."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise _bad(key, f"must be like '1,0.5', got {text!r}") from None
    if len(values) != n or not all(0.0 < v <= 1.0 for v in values):
        raise _bad(key, f"must be {n} weights in (0, 1] (one per scale), got {text!r}")
    return values


def _ints(key: str, text: str, lo: int, hi: int) -> tuple[int, ...]:
    """A comma-separated set of integers in ``lo..hi``, sorted."""
    try:
        values = tuple(sorted({int(v) for v in text.split(",")}))
    except ValueError:
        raise _bad(key, f"must be like '1,2,3', got {text!r}") from None
    if not values or values[0] < lo or values[-1] > hi:
        raise _bad(key, f"each must be in {lo}..{hi}, got {text!r}")
    return values


def check_params(params: Mapping[str, Param]) -> dict[str, Param]:
    """Defaults merged with ``params``, type- and range-checked.

    >>> check_params({"bins": 12})["bins"]
    12
    >>> check_params({"decay": 1.5})
    Traceback (most recent call last):
    ...
    edge_agent.detectors.base.DetectorSpecError: detector.params.decay: must be in (0, 1), got 1.5
    """
    merged: dict[str, Param] = dict(DEFAULTS)
    for key, value in params.items():
        if key not in DEFAULTS:
            known = ", ".join(sorted(DEFAULTS))
            raise _bad(key, f"unknown parameter (known: {known})")
        want = type(DEFAULTS[key])
        if want is float and isinstance(value, int | float) and not isinstance(value, bool):
            value = float(value)
        elif not isinstance(value, want) or isinstance(value, bool):
            raise _bad(key, f"must be {want.__name__}, got {value!r}")
        merged[key] = value
    margin = float(merged["margin"])
    if not 0.0 < margin <= 1.0:
        raise _bad("margin", f"must be in (0, 1], got {margin}")
    threshold = float(merged["threshold"])
    if not threshold > 0.0:  # above 1: never flags (all is learned)
        raise _bad("threshold", f"must be > 0, got {threshold}")
    decay = float(merged["decay"])
    if not 0.0 < decay < 1.0:
        raise _bad("decay", f"must be in (0, 1), got {decay}")
    if not 2 <= int(merged["bins"]) <= 1000:
        raise _bad("bins", f"must be in 2..1000, got {merged['bins']}")
    if not 10 <= int(merged["cap"]) <= 40_000:  # 40k contexts pickle in under 1 MB
        raise _bad("cap", f"must be in 10..40000, got {merged['cap']}")
    orders = _ints("orders", str(merged["orders"]), 1, 32)
    if int(merged["cap"]) * (orders[-1] + 2) > 400_000:  # keeps the pickled state < 1 MB
        raise _bad("cap", "cap * (max order + 2) must be <= 400000")
    scales = _ints("scales", str(merged["scales"]), 1, 10_000)
    if len(scales) > MAX_SCALES:  # each scale costs work on every reading
        raise _bad("scales", f"at most {MAX_SCALES} scales, got {len(scales)}")
    _floats("scale_weights", str(merged["scale_weights"]), len(scales))
    if not 0.0 <= float(merged["min_excess"]) <= 1.0:
        raise _bad("min_excess", f"must be in [0, 1], got {merged['min_excess']}")
    if not 0.0 < float(merged["context_weight"]) <= 1.0:
        raise _bad("context_weight", f"must be in (0, 1], got {merged['context_weight']}")
    if not 1 <= int(merged["release"]) <= 100_000:
        raise _bad("release", f"must be in 1..100000, got {merged['release']}")
    return merged


class ContextModel:
    """Novelty of the recent quantised shape of a stream; see the module docstring."""

    def __init__(
        self,
        bins: int,
        orders: tuple[int, ...],
        scales: tuple[int, ...],
        cap: int,
        decay: float,
        margin: float,
        min_excess: float = 0.0075,
        context_weight: float = 0.9,
        release: int = 5,
        scale_weights: tuple[float, ...] | None = None,
    ) -> None:
        from river import stats

        self._bins = bins
        self._orders = orders
        self._depth = max(orders)
        self._scales = scales
        self._cap = cap
        self._decay = decay
        self._margin = margin
        self._min_excess = min_excess
        self._weight = context_weight / len(orders)
        # The weight of each scale's novelty (one per scale, in scale order).
        self._scale_w = tuple(scale_weights) if scale_weights else (1.0,) * len(scales)
        if len(self._scale_w) != len(scales):
            raise ValueError("scale_weights: one weight per scale")
        self._release = release
        self._min = stats.Min()  # the range seen so far (the normaliser)
        self._max = stats.Max()
        # Per time scale: the running sum and count of the block being filled,
        # and the last ``depth`` bins of the finished blocks.
        self._sum = [0.0] * len(scales)
        self._count = [0] * len(scales)
        self._recent: list[list[int]] = [[] for _ in scales]
        self._seen: dict[tuple[int, ...], int] = {}  # (scale, k, *bins) -> times learned
        self._gate = 0.0  # the highest novelty met so far, fading
        # Contexts of the reading just scored (one list per closed block), and
        # of the flagged readings waiting for the alarm to clear.
        self._pending: list[tuple[float, list[tuple[int, ...]]]] | None = None
        self._held: list[list[tuple[float, list[tuple[int, ...]]]]] = []
        self._quiet = 0  # readings learned since the last flagged one

    def _range(self, x: float) -> tuple[float, float]:
        self._min.update(x)
        self._max.update(x)
        return float(self._min.get()), float(self._max.get())

    def _advance(self, x: float) -> list[tuple[float, list[tuple[int, ...]]]]:
        """Move every time scale on by ``x``; (scale weight, contexts) of each block it closes."""
        lo, hi = self._range(x)
        span = hi - lo
        out: list[tuple[float, list[tuple[int, ...]]]] = []
        for j, size in enumerate(self._scales):
            self._sum[j] += x
            self._count[j] += 1
            if self._count[j] < size:
                continue
            mean = self._sum[j] / size
            b = min(int((mean - lo) / span * self._bins), self._bins - 1) if span > 0 else 0
            recent = self._recent[j]
            recent.append(max(b, 0))
            if len(recent) > self._depth:
                del recent[0]
            n = len(recent)
            out.append(
                (self._scale_w[j], [(size, k, *recent[n - k :]) for k in self._orders if n >= k])
            )
            self._sum[j] = 0.0
            self._count[j] = 0
        return out

    def _novelty(self, closed: list[tuple[float, list[tuple[int, ...]]]]) -> float:
        """``context_weight`` x scale weight x the mean over orders of ``1/(1+count)``, highest."""
        seen = self._seen
        best = 0.0
        for w, contexts in closed:
            best = max(best, w * sum(1.0 / (1 + seen.get(c, 0)) for c in contexts))
        return best * self._weight

    def score(self, x: float) -> float:
        """Onset score in [0, 1] of ``x``; moves the stream on but counts nothing."""
        if not math.isfinite(x):
            self._pending = None
            return 0.0
        lo, hi = float(self._min.get()), float(self._max.get())
        excess = 0.0
        if x > hi or x < lo:
            span = hi - lo
            excess = (x - hi if x > hi else lo - x) / span if span > 0 else 1.0
        contexts = self._pending = self._advance(x)
        # A new extreme by more than a sliver of the range is fully novel; a
        # reading that just nudges the range is judged by its context (it falls
        # in the edge bin), which spares noisy streams a report per new record.
        novelty = 1.0 if excess >= self._min_excess and excess > 0 else self._novelty(contexts)
        out = novelty if novelty - self._gate >= self._margin else 0.0
        self._gate = max(self._gate * self._decay, novelty)
        return out

    def learn(self, x: float) -> None:
        """Count the contexts of ``x`` (scored just before, or a warm-up reading)."""
        if not math.isfinite(x):
            return
        contexts = self._pending if self._pending is not None else self._advance(x)
        self._pending = None
        self._count_all(contexts)
        self._quiet += 1
        if self._held and self._quiet >= self._release:
            held, self._held = self._held, []
            for ctx in held:
                self._count_all(ctx)

    def hold(self) -> None:
        """Keep the contexts of the flagged reading just scored aside, uncounted.

        They are counted once ``release`` readings in a row have been learned
        (the alarm has cleared); while readings keep being flagged they never
        are, so a pattern that keeps alarming is never learned as normal.
        """
        if self._pending is not None:
            self._held.append(self._pending)
            if len(self._held) > _MAX_HELD:
                del self._held[0]  # the oldest of a long alarm is never learned
        self._pending = None
        self._quiet = 0

    def _count_all(self, closed: list[tuple[float, list[tuple[int, ...]]]]) -> None:
        seen = self._seen
        for _, contexts in closed:
            for c in contexts:
                count = seen.get(c)
                if count is None:
                    if len(seen) >= self._cap:
                        del seen[next(iter(seen))]  # forget the oldest context
                    seen[c] = 1
                else:
                    seen[c] = count + 1


def build_model(params: Mapping[str, Param]) -> ContextModel:
    """The model for checked ``params`` (see :func:`check_params`)."""
    scales = _ints("scales", str(params["scales"]), 1, 10_000)
    return ContextModel(
        int(params["bins"]),
        _ints("orders", str(params["orders"]), 1, 32),
        scales,
        int(params["cap"]),
        float(params["decay"]),
        float(params["margin"]),
        float(params["min_excess"]),
        float(params["context_weight"]),
        int(params["release"]),
        _floats("scale_weights", str(params["scale_weights"]), len(scales)),
    )

"""``context``: a scale-free onset detector for any univariate stream (pure, no I/O).

Built for streams whose scale is not known in advance (the NAB corpus mixes
CPU percentages, tweet counts and machine temperatures) with one
configuration for all. The model

* tracks the range ``[lo, hi]`` of the values it has seen and quantises
  values into ``bins`` equal bins of that range;
* looks at the stream at several time ``scales``: at scale ``s`` the values
  are averaged over consecutive blocks of ``s`` readings (scale 1: the
  readings themselves), so that slow shapes (a missing daily peak) are as
  visible as fast ones (a spike);
* remembers how often it has *learned* each context: the last ``k`` bins at
  one scale, for every ``k`` in ``orders`` (a bounded dict of at most ``cap``
  contexts, the oldest forgotten first);
* measures the novelty of a reading as ``1 / (1 + count)`` averaged over the
  orders, the highest over the scales whose block the reading closes (a
  value outside the range seen so far is fully novel, 1.0);
* reports only *onsets*: a reading scores its novelty when that novelty
  exceeds, by at least ``margin``, the highest novelty already met (a memory
  that fades by ``decay`` per reading), and 0 otherwise. A fault that goes on
  is reported once, then learned as the new normal. Persistent out-of-range
  temperatures are the job of the agent's high/low threshold alarms.

It implements :class:`edge_agent.detect.Model` (``score`` then ``learn``).
Only contexts are learned; the range (the normaliser) and the onset memory
belong to scoring, so a flagged extreme still widens the range and is not
re-reported on every later reading. Because it reports onsets only, it is
meant to learn flagged readings too (:attr:`ContextModel.learns_flagged`):
the agent's rule of not learning them (right for the z-score, whose alarm
must stay on during a fault) only makes this model report the same pattern
again. Scores lie in [0, 1]; the default ``threshold`` is the one the NAB
sweep chose (``benchmarks/nab``; scores and how to reproduce them in
``docs/benchmarks.md``).

>>> m = build_model(check_params({}))
>>> for i in range(300):
...     m.learn(20.0 + (i % 7) * 0.1)
>>> m.score(20.6) < 0.05          # the familiar pattern goes on
True
>>> m.score(35.0)                 # outside everything seen: an onset
1.0
>>> m.score(35.0)                 # the same fault again is not a new onset
0.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

__all__ = ["NAB_DEFAULTS", "ContextModel", "build_model", "check_params"]

Param = float | int | bool | str

#: Default parameters (``threshold`` and ``warmup`` are the agent's common ones).
NAB_DEFAULTS: Final[dict[str, Param]] = {
    "threshold": 0.84,
    "warmup": 100,
    "bins": 10,
    "orders": "1,2,3,4,6",
    "scales": "1,24,144",
    "cap": 8000,
    "decay": 0.9998,
    "margin": 0.005,
}


def _bad(key: str, problem: str) -> ValueError:
    """The agent's ``DetectorSpecError`` (a ValueError) for ``params.<key>``."""
    from edge_agent.detect import DetectorSpecError  # here: detect imports this module

    return DetectorSpecError(f"params.{key}", problem)


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
    edge_agent.detect.DetectorSpecError: detector.params.decay: must be in (0, 1), got 1.5
    """
    merged: dict[str, Param] = dict(NAB_DEFAULTS)
    for key, value in params.items():
        if key not in NAB_DEFAULTS:
            known = ", ".join(sorted(NAB_DEFAULTS))
            raise _bad(key, f"unknown parameter (known: {known})")
        want = type(NAB_DEFAULTS[key])
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
    _ints("scales", str(merged["scales"]), 1, 10_000)
    return merged


class ContextModel:
    """Novelty of the recent quantised shape of a stream; see the module docstring."""

    #: Learn every reading, flagged or not: an onset detector's flagged
    #: reading is the first of a new regime, which it must learn to fall quiet.
    learns_flagged: Final[bool] = True

    def __init__(
        self,
        bins: int,
        orders: tuple[int, ...],
        scales: tuple[int, ...],
        cap: int,
        decay: float,
        margin: float,
    ) -> None:
        self._bins = bins
        self._orders = orders
        self._depth = max(orders)
        self._scales = scales
        self._cap = cap
        self._decay = decay
        self._margin = margin
        self._lo = math.inf
        self._hi = -math.inf
        # Per time scale: the running sum and count of the block being filled,
        # and the last ``depth`` bins of the block means learned.
        self._sum = [0.0] * len(scales)
        self._count = [0] * len(scales)
        self._recent: list[list[int]] = [[] for _ in scales]
        self._seen: dict[tuple[int, ...], int] = {}  # (scale, k, *bins) -> times learned
        self._gate = 0.0  # the highest novelty met so far, fading

    def _bin(self, x: float) -> int:
        if x < self._lo:
            return -1
        if x > self._hi:
            return self._bins
        span = self._hi - self._lo
        if span <= 0.0:
            return 0
        return min(int((x - self._lo) / span * self._bins), self._bins - 1)

    def _contexts(self, j: int, x: float) -> list[tuple[int, ...]] | None:
        """Contexts ending with ``x`` at scale ``j``, or None if ``x`` does not close a block."""
        size = self._scales[j]
        if self._count[j] + 1 < size:
            return None
        seq = [*self._recent[j], self._bin((self._sum[j] + x) / size)]
        return [(size, k, *seq[-k:]) for k in self._orders if len(seq) >= k]

    def score(self, x: float) -> float:
        """Onset score in [0, 1] of ``x``; updates the range and onset memory, learns nothing."""
        if not math.isfinite(x):
            return 0.0
        if x < self._lo or x > self._hi:
            novelty = 1.0
        else:
            seen = self._seen
            novelty = 0.0
            for j in range(len(self._scales)):
                ctx = self._contexts(j, x)
                if ctx:
                    new = sum(1.0 / (1 + seen.get(c, 0)) for c in ctx) / len(self._orders)
                    novelty = max(novelty, new)
        self._lo = min(self._lo, x)
        self._hi = max(self._hi, x)
        out = novelty if novelty - self._gate >= self._margin else 0.0
        self._gate = max(self._gate * self._decay, novelty)
        return out

    def learn(self, x: float) -> None:
        """Count ``x``'s contexts at every scale whose block it closes."""
        if not math.isfinite(x):
            return
        self._lo = min(self._lo, x)  # warm-up readings are learned but never scored
        self._hi = max(self._hi, x)
        seen = self._seen
        for j, size in enumerate(self._scales):
            ctx = self._contexts(j, x)
            if ctx is None:
                self._sum[j] += x
                self._count[j] += 1
                continue
            for c in ctx:
                count = seen.get(c)
                if count is None:
                    if len(seen) >= self._cap:
                        del seen[next(iter(seen))]  # forget the oldest context
                    seen[c] = 1
                else:
                    seen[c] = count + 1
            recent = self._recent[j]
            recent.append(self._bin((self._sum[j] + x) / size))
            if len(recent) > self._depth:
                del recent[0]
            self._sum[j] = 0.0
            self._count[j] = 0


def build_model(params: Mapping[str, Param]) -> ContextModel:
    """The model for checked ``params`` (see :func:`check_params`)."""
    return ContextModel(
        int(params["bins"]),
        _ints("orders", str(params["orders"]), 1, 32),
        _ints("scales", str(params["scales"]), 1, 10_000),
        int(params["cap"]),
        float(params["decay"]),
        float(params["margin"]),
    )

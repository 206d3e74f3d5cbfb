"""``hst``: river's HalfSpaceTrees on temperature and its change (pure, no I/O).

Scores lie in [0, 1]; a value far from everything learned scores near 1.

>>> m = build(DEFAULTS)
>>> for i in range(300):
...     m.learn(4.0 + 0.1 * (i % 3))
>>> m.score(4.1) < 0.5 < m.score(60.0)
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from edge_agent.detectors.base import DetectorSpecError, Param, check_range

__all__ = ["DEFAULTS", "MAX_NODES", "HSTModel", "build", "check"]

#: Default parameters (``threshold`` and ``warmup`` are common to every detector).
DEFAULTS: Final[dict[str, Param]] = {
    "threshold": 0.9,
    "warmup": 200,
    "n_trees": 10,
    "height": 8,
    "window_size": 100,
    "min_c": -40.0,
    "max_c": 80.0,
    "max_delta_c": 5.0,
    "seed": 42,
}


#: Nodes of all trees of one sensor's model, at most: each costs ~225 bytes in river
#: (measured: docs/benchmarks.md), so one sensor's model stays under ~7.5 MB. The
#: default (10 trees of height 8) has 5,110; height 20 would need 21 million.
MAX_NODES: Final = 32_768


def check(params: Mapping[str, Param]) -> None:
    """Range checks of merged, type-checked ``params``; memory is bounded by :data:`MAX_NODES`.

    >>> check({**DEFAULTS, "height": 20})
    Traceback (most recent call last):
    ...
    edge_agent.detectors.base.DetectorSpecError: detector.params.height: must be in 1..14, got 20
    >>> check({**DEFAULTS, "height": 12})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    edge_agent.detectors.base.DetectorSpecError: detector.params.height: n_trees ...
    """
    check_range(params, "n_trees", 1, 100)
    check_range(params, "height", 1, 14)
    check_range(params, "window_size", 1, 100_000)
    check_range(params, "seed", 0, 2**32 - 1)
    for key in ("min_c", "max_c"):
        check_range(params, key, -300.0, 1000.0)
    check_range(params, "max_delta_c", 1e-3, 1000.0)
    if not float(params["min_c"]) < float(params["max_c"]):
        raise DetectorSpecError("params.min_c", f"must be below max_c, got {params['min_c']}")
    n_trees, height = int(params["n_trees"]), int(params["height"])
    nodes = n_trees * (2 ** (height + 1) - 1)
    if nodes > MAX_NODES:
        raise DetectorSpecError(
            "params.height",
            f"n_trees * (2**(height+1) - 1) must be <= {MAX_NODES} (memory), "
            f"got {n_trees} trees of height {height}: {nodes} nodes",
        )


class HSTModel:
    """river's HalfSpaceTrees on (temperature, change since last reading).

    Half-space trees want features in known bounds; ``min_c``/``max_c`` and
    ``max_delta_c`` give them (values are clamped into the bounds).
    """

    def __init__(
        self,
        n_trees: int,
        height: int,
        window_size: int,
        min_c: float,
        max_c: float,
        max_delta_c: float,
        seed: int,
    ) -> None:
        from river import anomaly

        self._lo, self._hi, self._dmax = min_c, max_c, max_delta_c
        self._model = anomaly.HalfSpaceTrees(
            n_trees=n_trees,
            height=height,
            window_size=window_size,
            limits={"t": (min_c, max_c), "d": (-max_delta_c, max_delta_c)},
            seed=seed,
        )
        self._prev: float | None = None

    def _features(self, x: float) -> dict[str, float]:
        d = 0.0 if self._prev is None else x - self._prev
        return {
            "t": min(max(x, self._lo), self._hi),
            "d": min(max(d, -self._dmax), self._dmax),
        }

    def score(self, x: float) -> float:
        return float(self._model.score_one(self._features(x)))  # type: ignore[no-untyped-call]

    def learn(self, x: float) -> None:
        self._model.learn_one(self._features(x))  # type: ignore[no-untyped-call]
        self._prev = x


def build(params: Mapping[str, Param]) -> HSTModel:
    """The model for checked ``params`` (see :func:`edge_agent.detect.check_detector`)."""
    return HSTModel(
        int(params["n_trees"]),
        int(params["height"]),
        int(params["window_size"]),
        float(params["min_c"]),
        float(params["max_c"]),
        float(params["max_delta_c"]),
        int(params["seed"]),
    )

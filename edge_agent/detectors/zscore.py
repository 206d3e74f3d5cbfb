"""``zscore``: distance from an exponentially weighted mean, in std units (pure, no I/O).

>>> m = build({**DEFAULTS, "min_std": 0.5})
>>> for x in (4.0, 4.1, 3.9, 4.0):
...     m.learn(x)
>>> round(m.score(6.0), 1)  # 2 °C away, the noise floor (0.5) as std
4.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from edge_agent.detectors.base import Param, check_range

__all__ = ["DEFAULTS", "ZScoreModel", "build", "check"]

#: Default parameters (``threshold`` and ``warmup`` are common to every detector).
DEFAULTS: Final[dict[str, Param]] = {"threshold": 6.0, "warmup": 30, "alpha": 0.01, "min_std": 0.1}


class ZScoreModel:
    """Distance from an exponentially weighted mean, in exponentially weighted std units.

    Built on river's ``stats.EWMean``/``stats.EWVar``. ``min_std`` is a noise
    floor: a probe in a very stable room (12-bit steps of 0.0625 °C) would
    otherwise score one step as a huge deviation.
    """

    def __init__(self, alpha: float, min_std: float) -> None:
        from river import stats

        self._mean = stats.EWMean(fading_factor=alpha)
        self._var = stats.EWVar(fading_factor=alpha)
        self._min_var = min_std * min_std

    def score(self, x: float) -> float:
        mean = self._mean.get()
        var = max(self._var.get(), self._min_var)
        return abs(x - mean) / math.sqrt(var)

    def learn(self, x: float) -> None:
        self._mean.update(x)
        self._var.update(x)


def check(params: Mapping[str, Param]) -> None:
    """Range checks of merged, type-checked ``params`` (the model's state is 4 floats).

    ``min_std`` > 0 keeps the score finite (a constant stream has variance 0).
    """
    check_range(params, "alpha", 1e-6, 1.0)
    check_range(params, "min_std", 1e-6, 100.0)


def build(params: Mapping[str, Param]) -> ZScoreModel:
    """The model for checked ``params`` (see :func:`edge_agent.detect.check_detector`)."""
    return ZScoreModel(float(params["alpha"]), float(params["min_std"]))

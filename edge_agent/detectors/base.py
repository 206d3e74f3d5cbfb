"""What every detector shares: the model interface, parameter types and the spec error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

__all__ = ["DetectorSpecError", "Model", "Param", "check_range"]

#: A detector parameter value as a TOML config or a ``DeviceConfig`` gives it.
Param = float | int | bool | str


class DetectorSpecError(ValueError):
    """A detector name or parameter is not acceptable; ``key`` names it.

    >>> str(DetectorSpecError("params.bins", "must be in 2..1000, got 1"))
    'detector.params.bins: must be in 2..1000, got 1'
    """

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"detector.{key}: {problem}")


def check_range(params: Mapping[str, Param], key: str, lo: float, hi: float) -> None:
    """``params[key]`` must lie in ``lo..hi`` (inclusive); the error names the key.

    >>> check_range({"height": 20}, "height", 1, 14)
    Traceback (most recent call last):
    ...
    edge_agent.detectors.base.DetectorSpecError: detector.params.height: must be in 1..14, got 20
    """
    value = params[key]
    if not (isinstance(value, int | float) and lo <= value <= hi):  # NaN fails too
        raise DetectorSpecError(f"params.{key}", f"must be in {lo:g}..{hi:g}, got {value!r}")


class Model(Protocol):
    """A univariate online model: score a value, then (maybe) learn it.

    A model of sequences may also define ``hold()``: the monitor calls it
    instead of ``learn`` for a flagged reading (see :mod:`edge_agent.detect`).
    A model of a time window may define ``at(ts_ms)``: the monitor calls it with
    each reading's time (None: a bare series, 1 s apart) before judging it.
    """

    def score(self, x: float) -> float: ...

    def learn(self, x: float) -> None: ...

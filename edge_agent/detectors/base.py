"""What every detector shares: the model interface, parameter types and the spec error."""

from __future__ import annotations

from typing import Protocol

__all__ = ["DetectorSpecError", "Model", "Param"]

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


class Model(Protocol):
    """A univariate online model: score a value, then (maybe) learn it.

    A model of sequences may also define ``hold()``: the monitor calls it
    instead of ``learn`` for a flagged reading (see :mod:`edge_agent.detect`).
    """

    def score(self, x: float) -> float: ...

    def learn(self, x: float) -> None: ...

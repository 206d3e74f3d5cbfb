"""The one error of the local stack: what the CLI prints as ``thermowatch stack: error: ...``."""

from __future__ import annotations

__all__ = ["StackError"]


class StackError(RuntimeError):
    """A service could not be installed, started, stopped or reached."""

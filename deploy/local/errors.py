"""The errors of the local stack: what the CLI prints as ``thermowatch stack: error: ...``."""

from __future__ import annotations

__all__ = ["StackError", "UnknownUserError", "UserExistsError"]


class StackError(RuntimeError):
    """A service could not be installed, started, stopped or reached."""


class UserExistsError(StackError):
    """An MQTT user to be added exists already (its name is ``args[0]``)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class UnknownUserError(StackError):
    """An MQTT user to be changed or removed does not exist (its name is ``args[0]``)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

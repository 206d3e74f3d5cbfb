"""The edge agent's errors: two fatal ones, and the full disk.

The fatal ones are what the agent cannot run without; neither is retried
here. Raised at start-up, they end the process with
``<prog>: error: <message>`` and exit status 1, so that systemd restarts it
(``Restart=on-failure``) and the operator reads why in the journal. Other
degraded modes are not errors: a bad read is a reading with a ``quality``
flag (``edge_agent.sensors``), an absent broker is a reconnect with backoff
(``edge_agent.mqtt``), a refused message is resent (``edge_agent.publisher``).
A full disk is the one degraded mode raised as an error,
:class:`StorageFullError`, which the pipeline catches: the readings are
counted, reported, and announced by a Gap once space returns
(``edge_agent.outbox``).

>>> str(NoSensorError()).startswith("no temperature sensor found; looked in (nowhere")
True
"""

from __future__ import annotations

import sqlite3

__all__ = [
    "ENABLE_1WIRE_HINT",
    "MOCK_GPIO_HINT",
    "EdgeError",
    "NoPinFactoryError",
    "NoSensorError",
    "OutboxError",
    "StorageFullError",
    "out_of_space",
]

ENABLE_1WIRE_HINT = (
    "enable 1-Wire: run 'sudo raspi-config nonint do_onewire 0' (or add "
    "'dtoverlay=w1-gpio,gpiopin=4' to /boot/firmware/config.txt), reboot, and check that "
    "'ls /sys/bus/w1/devices' lists 28-* directories; or set sensors.host_enabled = true "
    "to use the board's own thermal zone"
)


class EdgeError(Exception):
    """Base of every edge agent error."""


class NoSensorError(EdgeError):
    """No temperature sensor at all: nothing to measure, so the agent cannot start.

    With ``sensors.require_sensor = false`` the agent starts anyway and waits
    for a probe to be plugged in.
    """

    def __init__(self, *places: str) -> None:
        self.places = places
        where = ", ".join(places) if places else "(nowhere: every sensor kind is disabled)"
        super().__init__(f"no temperature sensor found; looked in {where}; {ENABLE_1WIRE_HINT}")


MOCK_GPIO_HINT = (
    "on a machine without GPIO run 'thermowatch edge run --mock-gpio' (relay and buzzer "
    'simulated), or set gpio.pin_factory = "mock" or gpio.enabled = false in the config'
)


class NoPinFactoryError(EdgeError):
    """No gpiozero pin factory can load (no GPIO here): the outputs cannot start.

    Raised while the agent is built, before anything is written to disk.

    >>> print(NoPinFactoryError("Unable to load any default pin factory!"))  # doctest: +ELLIPSIS
    no GPIO pin factory can load here (gpiozero: Unable to load ...!); on a machine without GPIO ...
    """

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(
            f"no GPIO pin factory can load here (gpiozero: {detail}); {MOCK_GPIO_HINT}"
        )


class OutboxError(EdgeError):
    """The outbox database cannot be opened or written: fatal (data would be lost)."""


class StorageFullError(EdgeError):
    """The outbox had no room for readings (disk full or failing): degraded, not fatal.

    The readings' ``seqs`` are spent: the outbox announces them in a
    ``disk_full`` Gap with the first write that succeeds once space returns.
    """

    def __init__(self, seqs: list[int], detail: str) -> None:
        self.seqs = seqs
        what = f"seqs {seqs[0]}..{seqs[-1]}" if seqs else "readings"
        super().__init__(f"no room to store {what}: {detail}")


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite saying the disk is full or failing (SQLITE_FULL / SQLITE_IOERR).

    >>> out_of_space(sqlite3.OperationalError("database or disk is full"))
    False
    >>> e = sqlite3.OperationalError("database or disk is full"); e.sqlite_errorcode = 13
    >>> out_of_space(e)
    True
    """
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)

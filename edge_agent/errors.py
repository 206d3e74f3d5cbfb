"""The edge agent's error taxonomy: one place decides retry, skip or crash.

Every error carries a ``retriable`` flag. Retriable errors are degraded modes
(a sensor read that failed, a broker that is away): the agent logs a warning
and carries on. Non-retriable errors are fatal at start-up (no sensor at all,
an outbox that cannot be opened): the process exits non-zero so that systemd
restarts it (``Restart=on-failure``) and the operator sees why in the journal.

>>> NoSensorError("/sys/bus/w1/devices").retriable
False
>>> SensorReadError("28-00000a", "crc mismatch").retriable
True
"""

from __future__ import annotations

__all__ = [
    "EdgeError",
    "NoSensorError",
    "OutboxError",
    "RemoteConfigRejectedError",
    "SensorReadError",
]

ENABLE_1WIRE_HINT = (
    "enable 1-Wire: run 'sudo raspi-config nonint do_onewire 0' (or add "
    "'dtoverlay=w1-gpio,gpiopin=4' to /boot/firmware/config.txt), reboot, and check that "
    "'ls /sys/bus/w1/devices' lists 28-* directories; or set sensors.host_enabled = true "
    "to use the board's own thermal zone"
)


class EdgeError(Exception):
    """Base of every edge agent error."""

    retriable: bool = False


class NoSensorError(EdgeError):
    """No temperature sensor at all: nothing to measure, so the agent cannot start."""

    retriable = False

    def __init__(self, *places: str) -> None:
        self.places = places
        where = ", ".join(places) if places else "(nowhere: every sensor kind is disabled)"
        super().__init__(f"no temperature sensor found; looked in {where}; {ENABLE_1WIRE_HINT}")


class SensorReadError(EdgeError):
    """One read of one sensor failed (missing file, garbled text); retried next round."""

    retriable = True

    def __init__(self, sensor_id: str, problem: str) -> None:
        self.sensor_id = sensor_id
        self.problem = problem
        super().__init__(f"sensor {sensor_id}: {problem}")


class OutboxError(EdgeError):
    """The outbox database cannot be opened or written: fatal (data would be lost)."""

    retriable = False


class RemoteConfigRejectedError(EdgeError):
    """A remote DeviceConfig was refused; the previous configuration stays in force."""

    retriable = True

    def __init__(self, version: int | None, reason: str) -> None:
        self.version = version
        self.reason = reason
        super().__init__(f"config version {version} rejected: {reason}")

"""The edge agent's fatal errors: the two things it cannot run without.

Neither is retried here. Raised at start-up, they end the process with
``<prog>: error: <message>`` and exit status 1, so that systemd restarts it
(``Restart=on-failure``) and the operator reads why in the journal. Degraded
modes are not errors: a bad read is a reading with a ``quality`` flag
(``edge_agent.sensors``), an absent broker is a reconnect with backoff
(``edge_agent.mqtt``), a refused message is resent (``edge_agent.publisher``).

>>> str(NoSensorError()).startswith("no temperature sensor found; looked in (nowhere")
True
"""

from __future__ import annotations

__all__ = ["ENABLE_1WIRE_HINT", "EdgeError", "NoSensorError", "OutboxError"]

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


class OutboxError(EdgeError):
    """The outbox database cannot be opened or written: fatal (data would be lost)."""

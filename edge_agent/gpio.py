"""GPIO adapter (gpiozero): status LED, alarm LED, buzzer, optional relay and button.

Everything here is local and works with the network gone. The status LED is
steady when connected, blinks slowly while buffering (broker away or backlog),
and fast on a fault (a sensor not ``ok``). The alarm LED, the buzzer (unless
silenced by the button or disabled) and the relay follow the local alarm.

Tests pass ``gpiozero.pins.mock.MockFactory()`` and read the mock pins.
"""

from __future__ import annotations

import enum
import logging
import threading
import warnings
from importlib.metadata import entry_points
from typing import Any

from edge_agent.config import GpioSettings
from edge_agent.errors import NoPinFactoryError

__all__ = ["Outputs", "StatusLight", "make_pin_factory", "mock_pin_factory", "resolve_pin_factory"]

log = logging.getLogger(__name__)


class StatusLight(enum.Enum):
    CONNECTED = "connected"
    BUFFERING = "buffering"
    FAULT = "fault"


# (on seconds, off seconds) of the status LED per state; None: steady on.
_BLINK: dict[StatusLight, tuple[float, float] | None] = {
    StatusLight.CONNECTED: None,
    StatusLight.BUFFERING: (1.0, 1.0),
    StatusLight.FAULT: (0.1, 0.1),
}


def make_pin_factory(name: str) -> Any:
    """A gpiozero pin factory by its entry-point name (``""``: gpiozero's own choice)."""
    if not name:
        return None
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory()
    eps = entry_points(group="gpiozero_pin_factories")
    matches = [ep for ep in eps if ep.name == name]
    if not matches:
        known = ", ".join(sorted(ep.name for ep in eps))
        raise ValueError(f"gpio.pin_factory: unknown pin factory {name!r} (known: {known})")
    return matches[0].load()()


def mock_pin_factory() -> Any:
    """gpiozero's MockFactory (``--mock-gpio``): pins that exist only in memory."""
    from gpiozero.pins.mock import MockFactory

    return MockFactory()


def resolve_pin_factory(cfg: GpioSettings, given: Any = None) -> Any:
    """The pin factory the outputs will use, loaded now (None when ``gpio.enabled`` is false).

    ``given`` wins, then ``gpio.pin_factory``, then gpiozero's own choice
    (``GPIOZERO_PIN_FACTORY``, else the first that loads). Raises
    :class:`~edge_agent.errors.NoPinFactoryError` with what to do when none
    loads; a mock factory is logged as a warning (the outputs are simulated).

    >>> resolve_pin_factory(GpioSettings(enabled=False)) is None
    True
    >>> type(resolve_pin_factory(GpioSettings(pin_factory="mock"))).__name__
    'MockFactory'
    """
    if not cfg.enabled:
        return None
    factory = given
    if factory is None and cfg.pin_factory:
        try:
            factory = make_pin_factory(cfg.pin_factory)
        except ValueError:
            raise
        except Exception as exc:  # lgpio on a PC: ImportError, or the library's own error
            raise NoPinFactoryError(f"gpio.pin_factory {cfg.pin_factory!r}: {exc}") from None
    if factory is None:
        from gpiozero import Device
        from gpiozero.exc import BadPinFactory

        # gpiozero warns once per factory it falls back from; the error says it all.
        with warnings.catch_warnings(record=True) as fallbacks:
            warnings.simplefilter("always")
            try:
                Device.ensure_pin_factory()
            except BadPinFactory as exc:
                raise NoPinFactoryError(str(exc)) from None
        for w in fallbacks:
            log.debug("event=gpio_fallback detail=%r", str(w.message))
        factory = Device.pin_factory
    if type(factory).__name__ == "MockFactory":
        log.warning(
            "event=gpio_mocked detail=%r",
            "mock GPIO pins: the relay, buzzer and LEDs are simulated, nothing is switched",
        )
    return factory


class Outputs:
    """The physical outputs; ``set_*`` calls are idempotent and cheap when nothing changes."""

    def __init__(self, cfg: GpioSettings, *, pin_factory: Any = None) -> None:
        self._cfg = cfg
        self._factory = pin_factory
        self._lock = threading.Lock()
        self.status_led: Any = None
        self.alarm_led: Any = None
        self.buzzer: Any = None
        self.relay: Any = None
        self.button: Any = None
        self._status: StatusLight | None = None
        self._alarm = False
        self._buzzer_enabled = True
        self._relay_enabled = False
        self.silenced = False

    def start(self) -> None:
        """Claim the pins (nothing when ``gpio.enabled`` is false)."""
        if not self._cfg.enabled:
            return
        from gpiozero import LED, Button, Buzzer, OutputDevice

        factory = (
            self._factory if self._factory is not None else make_pin_factory(self._cfg.pin_factory)
        )
        self._factory = factory
        kw = {"pin_factory": factory}
        c = self._cfg
        if c.status_led_pin > 0:
            self.status_led = LED(c.status_led_pin, **kw)
        if c.alarm_led_pin > 0:
            self.alarm_led = LED(c.alarm_led_pin, **kw)
        if c.buzzer_pin > 0:
            self.buzzer = Buzzer(c.buzzer_pin, **kw)
        if c.relay_pin > 0:
            self.relay = OutputDevice(c.relay_pin, active_high=c.relay_active_high, **kw)
        if c.button_pin > 0:
            self.button = Button(c.button_pin, **kw)
            self.button.when_pressed = self._silence
        log.info("event=gpio_ready factory=%s", type(factory).__name__ if factory else "default")

    def _silence(self) -> None:
        with self._lock:
            if self._alarm and not self.silenced:
                self.silenced = True
                if self.buzzer is not None:
                    self.buzzer.off()
                log.info("event=alarm_silenced")

    def set_outputs_enabled(self, *, buzzer: bool, relay: bool) -> None:
        """Apply ``alarm.buzzer_enabled`` / ``alarm.relay_enabled`` (local or remote config)."""
        with self._lock:
            self._buzzer_enabled, self._relay_enabled = buzzer, relay
            self._apply_alarm()

    def set_alarm(self, active: bool) -> None:
        with self._lock:
            if active == self._alarm:
                return
            self._alarm = active
            if not active:
                self.silenced = False
            log.info("event=alarm_%s", "on" if active else "off")
            self._apply_alarm()

    def _apply_alarm(self) -> None:
        a = self._alarm
        if self.alarm_led is not None:
            self.alarm_led.value = a
        if self.buzzer is not None:
            self.buzzer.value = a and self._buzzer_enabled and not self.silenced
        if self.relay is not None:
            self.relay.value = a and self._relay_enabled

    def set_status(self, status: StatusLight) -> None:
        with self._lock:
            if status is self._status:
                return
            self._status = status
            if self.status_led is None:
                return
            blink = _BLINK[status]
            if blink is None:
                self.status_led.on()
            else:
                self.status_led.blink(on_time=blink[0], off_time=blink[1], background=True)

    @property
    def status(self) -> StatusLight | None:
        return self._status

    @property
    def alarm(self) -> bool:
        return self._alarm

    def close(self) -> None:
        """Release every pin (outputs go off); idempotent."""
        with self._lock:
            for name in ("button", "relay", "buzzer", "alarm_led", "status_led"):
                dev = getattr(self, name)
                if dev is not None:
                    dev.close()
                    setattr(self, name, None)

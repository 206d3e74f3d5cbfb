"""GPIO outputs on gpiozero's MockFactory: pin states asserted."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory

from edge_agent.config import GpioSettings
from edge_agent.gpio import Outputs, StatusLight

STATUS, ALARM, BUZZER, RELAY, BUTTON = 17, 27, 22, 23, 24


@pytest.fixture
def outputs() -> Iterator[tuple[Outputs, MockFactory]]:
    factory = MockFactory()
    out = Outputs(GpioSettings(relay_pin=RELAY, button_pin=BUTTON), pin_factory=factory)
    out.start()
    yield out, factory
    out.close()


def test_alarm_drives_led_buzzer_and_relay(outputs: tuple[Outputs, MockFactory]) -> None:
    out, f = outputs
    out.set_outputs_enabled(buzzer=True, relay=True)
    assert [f.pin(p).state for p in (ALARM, BUZZER, RELAY)] == [0, 0, 0]
    out.set_alarm(True)
    assert [f.pin(p).state for p in (ALARM, BUZZER, RELAY)] == [1, 1, 1]
    out.set_alarm(False)
    assert [f.pin(p).state for p in (ALARM, BUZZER, RELAY)] == [0, 0, 0]


def test_disabled_outputs_stay_off(outputs: tuple[Outputs, MockFactory]) -> None:
    out, f = outputs
    out.set_outputs_enabled(buzzer=False, relay=False)
    out.set_alarm(True)
    assert [f.pin(p).state for p in (ALARM, BUZZER, RELAY)] == [1, 0, 0]
    out.set_outputs_enabled(buzzer=True, relay=False)  # remote config turns it on
    assert f.pin(BUZZER).state == 1


def test_button_silences_buzzer_until_the_alarm_ends(outputs: tuple[Outputs, MockFactory]) -> None:
    out, f = outputs
    out.set_alarm(True)
    f.pin(BUTTON).drive_low()  # pressed (pull-up)
    f.pin(BUTTON).drive_high()
    assert (f.pin(ALARM).state, f.pin(BUZZER).state) == (1, 0)
    out.set_alarm(False)
    out.set_alarm(True)  # a new alarm sounds again
    assert f.pin(BUZZER).state == 1


def test_status_led_steady_or_blinking(outputs: tuple[Outputs, MockFactory]) -> None:
    out, f = outputs
    out.set_status(StatusLight.CONNECTED)
    assert f.pin(STATUS).state == 1
    out.set_status(StatusLight.FAULT)  # 0.1 s on / 0.1 s off
    f.pin(STATUS).clear_states()
    time.sleep(0.6)
    changes = [s.state for s in f.pin(STATUS).states]
    assert True in changes and False in changes
    out.set_status(StatusLight.CONNECTED)
    assert f.pin(STATUS).state == 1


def test_gpio_disabled_claims_no_pins() -> None:
    out = Outputs(GpioSettings(enabled=False), pin_factory=MockFactory())
    out.start()
    out.set_alarm(True)
    out.set_status(StatusLight.FAULT)
    assert out.alarm_led is None and out.alarm
    out.close()

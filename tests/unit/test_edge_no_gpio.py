"""``edge run`` on a machine without GPIO: a hint before the disk is touched, and ``--mock-gpio``.

No pin factory loading is made certain on any machine (a Pi too) with
``GPIOZERO_PIN_FACTORY`` naming a factory that does not exist: gpiozero then
raises ``BadPinFactory`` exactly as it does on a PC with no GPIO library.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from gpiozero import Device

from edge_agent.__main__ import main
from edge_agent.app import EdgeAgent
from edge_agent.config import GpioSettings, loads_config
from edge_agent.errors import NoPinFactoryError
from edge_agent.gpio import resolve_pin_factory

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, extra: str = "") -> Path:
    """An agent config whose state dir is under ``tmp_path`` (and not created yet)."""
    (tmp_path / "temp").write_text("42000\n", encoding="utf-8")
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f"""
[device]
state_dir = "{tmp_path / "state"}"
[sensors]
w1_enabled = false
host_enabled = true
host_file = "{tmp_path / "temp"}"
[outbox]
flush_timeout_s = 0.1
[mqtt]
port = 1
{extra}
""",
        encoding="utf-8",
    )
    return cfg


@pytest.fixture
def no_gpio(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pin factory can load here (and none was loaded before)."""
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-factory")
    monkeypatch.setattr(Device, "pin_factory", None)


@pytest.mark.usefixtures("no_gpio")
def test_run_without_gpio_names_the_fix_before_touching_the_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path)
    assert main(["run", "-c", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line
    assert err.startswith("python -m edge_agent: error: no GPIO pin factory can load here")
    assert "--mock-gpio" in err
    assert 'gpio.pin_factory = "mock"' in err
    assert "gpio.enabled = false" in err
    assert not (tmp_path / "state").exists()


@pytest.mark.usefixtures("no_gpio")
def test_building_the_agent_fails_first(tmp_path: Path) -> None:
    with pytest.raises(NoPinFactoryError, match="no-such-factory"):
        EdgeAgent(loads_config(_config(tmp_path).read_text(encoding="utf-8")))
    assert not (tmp_path / "state").exists()


@pytest.mark.usefixtures("no_gpio")
def test_disabled_gpio_needs_no_pin_factory(tmp_path: Path) -> None:
    text = _config(tmp_path, "[gpio]\nenabled = false\n").read_text(encoding="utf-8")
    agent = EdgeAgent(loads_config(text))
    assert agent.outputs.status_led is None
    agent.shutdown()


@pytest.mark.usefixtures("no_gpio")
def test_config_mock_factory_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="edge_agent.gpio"):
        factory = resolve_pin_factory(GpioSettings(pin_factory="mock"))
    assert type(factory).__name__ == "MockFactory"
    assert "event=gpio_mocked" in caplog.text
    assert "simulated" in caplog.text


def test_mock_gpio_runs_the_agent(tmp_path: Path) -> None:
    """``run --mock-gpio`` starts, samples into the outbox, and stops cleanly on SIGTERM."""
    cfg = _config(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GPIOZERO_PIN_FACTORY": "no-such-factory"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--mock-gpio", "-c", str(cfg)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if "event=agent_started" in line:
                break
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = "".join(seen) + rest
    assert proc.returncode == 0, log
    assert "event=gpio_mocked" in log
    assert "event=agent_started" in log
    assert (tmp_path / "state" / "outbox.sqlite3").exists()

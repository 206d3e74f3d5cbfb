"""Edge config: sample matches defaults, errors name the key, remote config merge."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from edge_agent.__main__ import main
from edge_agent.config import EdgeConfig, apply_device_config, load_config, loads_config
from stagekit.config import ConfigError
from telemetry_contract import DeviceConfig

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "edge_agent" / "sample.toml"


def test_sample_parses_to_the_defaults() -> None:
    assert load_config(SAMPLE, env={}) == EdgeConfig()


def test_sample_shows_every_default() -> None:
    text = SAMPLE.read_text()
    defaults = msgspec.to_builtins(EdgeConfig())
    for section, values in defaults.items():
        assert f"[{section}]" in text
        for key, value in values.items():
            if key == "params" or value is None:
                continue  # unset by default; the sample shows an example value
            m = re.search(rf"^# {key} = (.+)$", text, re.M)
            assert m, f"{section}.{key} missing from sample.toml"
            shown = loads_config(f"[{section}]\n{key} = {m.group(1)}\n")
            assert msgspec.to_builtins(shown)[section][key] == value, f"{section}.{key}"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[mqtt]\nqos = 2\n", "mqtt.qos: must be 1, got 2"),
        ("[mqtt]\nwill_delay_s = -1\n", "mqtt.will_delay_s: must be in 0..86400, got -1"),
        ('[device]\ndevice_id = "a/b"\n', "device.device_id: must match"),
        ("[alarm]\nhigh_c = 1.0\nlow_c = 2.0\n", "alarm.low_c: must be below alarm.high_c"),
        ('[detector]\nname = "magic"\n', "detector.name: unknown detector 'magic'"),
        ("[detector.params]\nwarmup = 0\n", "detector.params.warmup: must be in 1..1000000"),
        ("[outbox]\nmax_rows = 5\n", "outbox.max_rows: must be at least"),
        ('[outbox]\nsynchronous = "OFF"\n', "outbox.synchronous"),
        ("[sampling]\ninterval_s = 0.01\n", "sampling.interval_s: must be in 0.1..3600"),
    ],
)
def test_errors_name_the_key(toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        loads_config(toml)


def test_environment_and_state_directory_overrides() -> None:
    cfg = load_config(
        None,
        env={"THERMOWATCH_EDGE__MQTT__PORT": "1884", "THERMOWATCH_EDGE__DEVICE__SITE": "s9"},
    )
    assert (cfg.mqtt.port, cfg.device.site) == (1884, "s9")


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[mqtt]\nqos = 2\n")
    assert main(["check-config", "-c", str(bad)]) == 1
    assert "mqtt.qos: must be 1, got 2" in capsys.readouterr().err
    assert main(["check-config", "-c", str(SAMPLE)]) == 0
    assert main(["print-config", "-c", str(SAMPLE)]) == 0
    assert "[outbox]" in capsys.readouterr().out


def test_thermowatch_edge_is_registered() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "thermowatch", "edge", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    for cmd in ("run", "check-config", "print-config", "once", "simulate", "outbox"):
        assert cmd in out.stdout


def test_remote_config_keeps_what_it_does_not_name() -> None:
    base = loads_config('[device]\ndevice_id = "d1"\nsite = "s"\n[alarm]\nlow_c = -25.0\n')
    dc = DeviceConfig(
        device_id="d1",
        site="s",
        version=2,
        ts=1_767_225_600_000,
        detector_params={"threshold": 4.0},
        relay_enabled=True,
    )
    new = apply_device_config(base, dc)
    assert new.alarm.low_c == -25.0 and new.alarm.relay_enabled
    assert new.detector.params == {"threshold": 4.0}
    other = msgspec.structs.replace(dc, device_id="d2")
    with pytest.raises(ConfigError, match="device_id: config is for s/d2"):
        apply_device_config(base, other)
    low_above_high = msgspec.structs.replace(dc, alarm_high_c=-30.0)
    with pytest.raises(ConfigError, match=re.escape("alarm.low_c: must be below alarm.high_c")):
        apply_device_config(base, low_above_high)

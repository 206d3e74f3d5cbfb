"""The error messages the README's "Configuration" section shows are the ones check-config prints.

The README quotes them whole (``thermowatch: error: ...``); this runs the
commands it describes and compares, so the README and the code cannot drift.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from thermowatch.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def quoted_errors() -> list[str]:
    """The ``thermowatch: error: ...`` messages quoted in the README's Configuration section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"`(thermowatch: error: [^`]+)`", section.replace("\n", " "))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("THERMOWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("clean_env")
def test_readme_shows_what_check_config_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    printed = []
    # "with qos = 2 under [mqtt], thermowatch edge check-config -c edge.toml prints ..."
    (tmp_path / "edge.toml").write_text("[mqtt]\nqos = 2\n", encoding="utf-8")
    assert main(["edge", "check-config", "-c", "edge.toml"]) == 1
    printed.append(capsys.readouterr().err.strip())
    # "an error names the variable: ..." (THERMOWATCH_GATEWAY__MQTT__PORT=abc)
    monkeypatch.setenv("THERMOWATCH_GATEWAY__MQTT__PORT", "abc")
    assert main(["gateway", "check-config"]) == 1
    printed.append(capsys.readouterr().err.strip())
    assert quoted_errors() == printed

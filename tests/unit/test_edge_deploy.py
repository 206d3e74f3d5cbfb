"""The systemd unit passes ``systemd-analyze verify``; the install script parses."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from testsupport.prerequisites import require_tools

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "thermowatch-edge.service"
INSTALL = REPO / "deploy" / "pi" / "install.sh"


def test_unit_has_the_required_settings() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "DynamicUser=yes",
        "StateDirectory=thermowatch-edge",
        "SupplementaryGroups=gpio",
        "KillSignal=SIGTERM",
    ):
        assert f"\n{line}" in text, line


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    require_tools("systemd-analyze")
    # verify checks that ExecStart= exists: point it at this environment's entry point.
    exe = shutil.which("thermowatch") or sys.executable
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/thermowatch/venv/bin/thermowatch", exe))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr


def test_install_script_is_valid_sh() -> None:
    subprocess.run(["sh", "-n", str(INSTALL)], check=True)

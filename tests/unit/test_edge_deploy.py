"""The systemd unit passes ``systemd-analyze verify``; the install script parses; the
Pi installer's hashed requirements pin exactly the edge extra at constraints.txt's versions.

The installer itself runs in a fresh Debian root in tests/integration/test_pi_installer.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from testsupport.prerequisites import require_tools

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "thermowatch-edge.service"
INSTALL = REPO / "deploy" / "pi" / "install.sh"
REQUIREMENTS = REPO / "deploy" / "pi" / "requirements-edge.txt"


def _hashed_pins(text: str) -> dict[str, tuple[str, list[str]]]:
    """``{name: (version, [sha256, ...])}`` of a ``--generate-hashes`` requirements file."""
    pins: dict[str, tuple[str, list[str]]] = {}
    body = re.sub(r"#.*", "", text).replace("\\\n", " ")
    for line in filter(None, (ln.strip() for ln in body.splitlines())):
        spec, *options = line.split()
        name, sep, version = spec.partition("==")
        assert sep, f"requirements-edge.txt: {spec!r} is not pinned with =="
        # An environment marker ("; platform_python_implementation != 'PyPy'") may sit
        # between the pin and its hashes.
        hashes = [o.removeprefix("--hash=sha256:") for o in options if o.startswith("--hash=")]
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), spec
        pins[canonicalize_name(name)] = (version, hashes)
    return pins


def test_unit_has_the_required_settings() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "User=thermowatch",
        "Group=thermowatch",
        "StateDirectory=thermowatch-edge",
        "LoadCredential=mqtt-password:/etc/thermowatch/edge.password",
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


def test_installer_adds_the_service_user_to_group_gpio_where_it_exists() -> None:
    # The unit cannot name group gpio itself: a Debian without it would refuse to start.
    text = INSTALL.read_text()
    assert "getent group gpio" in text and 'usermod -a -G gpio "$SERVICE_USER"' in text
    assert "SupplementaryGroups=" not in UNIT.read_text()


def test_installer_requires_hashes_and_wheels() -> None:
    text = INSTALL.read_text().replace("\\\n", " ")
    (pip_line,) = [ln for ln in text.splitlines() if 'requirements-edge.txt"' in ln and "-r" in ln]
    for flag in ("--require-hashes", "--only-binary=:all:", "--no-binary=sdnotify"):
        assert flag in pip_line, flag
    assert re.search(r"install -q --no-deps .*\"\$PROJECT\"", text)


def test_hashed_requirements_pin_the_edge_extra_at_the_constraints() -> None:
    pins = _hashed_pins(REQUIREMENTS.read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    edge = [*project["dependencies"], *project["optional-dependencies"]["edge"]]
    constraints_txt = (REPO / "constraints.txt").read_text()
    constraints = {
        canonicalize_name(name): version
        for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", constraints_txt, re.M)
    }
    wanted = [Requirement(r) for r in edge]
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"requirements-edge.txt: {req.name} missing (make pi-requirements)"
        version, _ = pins[name]
        assert req.specifier.contains(version), f"{req.name}=={version} outside {req.specifier}"
    for name, (version, _) in pins.items():
        if name in constraints:
            assert version == constraints[name], (
                f"requirements-edge.txt: {name}=={version}, constraints.txt has "
                f"{constraints[name]} (make pi-requirements)"
            )


def test_hashed_requirements_parser_refuses_an_unhashed_pin() -> None:
    with pytest.raises(AssertionError):
        _hashed_pins("paho-mqtt==2.2.0\n")
    with pytest.raises(AssertionError):
        _hashed_pins("paho-mqtt>=2 \\\n    --hash=sha256:" + "0" * 64 + "\n")

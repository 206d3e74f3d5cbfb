"""What ``make demo`` and ``make test`` install, read from ``make -n`` (nothing runs).

The demo installs no browser; the tests install every tool a test requires
(``testsupport.prerequisites``); an externally managed ``python3`` gets a
virtual environment; ``.ci/run`` turns a missing prerequisite into a failure.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testsupport.prerequisites import require_tools

REPO = Path(__file__).resolve().parents[2]
TEST_TOOLS = ("chromium", "chromium-driver", "strace", "openssl", "systemd", "debootstrap")


def dry_run(target: str, *args: str) -> str:
    """The commands ``make`` would run for ``target``, every prerequisite out of date."""
    require_tools("make")
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", target, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def fake_python3(tmp_path: Path, externally_managed: bool) -> str:
    """A ``python3`` whose only answer is the Makefile's PEP 668 question."""
    exe = tmp_path / "python3"
    exe.write_text(f"#!/bin/sh\necho {externally_managed}\n", encoding="utf-8")
    exe.chmod(0o755)
    return str(exe)


def test_the_demo_installs_the_stages_mosquitto_and_java_but_no_browser() -> None:
    out = dry_run("demo")
    assert "-e '.[edge,gateway,cloud]'" in out, out
    for package in ("mosquitto", "mosquitto-clients", "openjdk-17-jdk-headless", "maven"):
        assert f":{package} " in out or f":{package};" in out, (package, out)
    for tool in TEST_TOOLS:
        assert tool not in out, (tool, out)
    assert "thermowatch demo" in out, out


def test_the_tests_install_every_prerequisite_first() -> None:
    out = dry_run("test")
    assert "-e '.[dev]'" in out, out
    for tool in TEST_TOOLS:
        assert f":{tool} " in out or f":{tool};" in out, (tool, out)
    assert out.index("apt-get install") < out.index("-m pytest"), out


def test_each_slow_step_says_what_it_does_and_pip_shows_its_progress() -> None:
    out = dry_run("deps-test")
    lines = out.splitlines()
    pip = next(i for i, line in enumerate(lines) if " -m pip install " in line)
    assert lines[pip - 1].startswith('echo "==> installing the Python package'), out
    assert "--quiet" not in lines[pip] and " -q " not in lines[pip], lines[pip]
    assert "==> installing from Debian" in out, out
    apt = out[out.index("apt-get install") :].split(";")[0]
    assert ">/dev/null" not in apt and "-qq" not in apt, apt


@pytest.mark.parametrize("managed", [True, False])
def test_an_externally_managed_python3_gets_a_virtual_environment(
    tmp_path: Path, managed: bool
) -> None:
    py = fake_python3(tmp_path, managed)
    out = dry_run("deps-demo", f"PYTHON3={py}")
    if managed:
        assert f"{py} -m venv .venv" in out, out
        assert ".venv/bin/python -m pip install" in out, out
    else:
        assert "venv" not in out, out
        assert f"{py} -m pip install" in out, out


def test_ci_run_makes_a_missing_prerequisite_a_failure() -> None:
    lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert "export CI=true" in lines
    assert lines.index("export CI=true") < lines.index("make test")

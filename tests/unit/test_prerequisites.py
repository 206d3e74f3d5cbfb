"""A missing prerequisite skips a test, and fails it under ``CI=true``.

Each case runs a small test file in a pytest subprocess (the helper calls
``pytest.skip`` / ``pytest.fail``, which only a running session can show).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from testsupport.prerequisites import missing_tools

REPO = Path(__file__).resolve().parents[2]

CASES = """
from testsupport.prerequisites import require, require_tools


def test_missing_condition():
    require(False, "a tool that is not here")


def test_missing_program():
    require_tools("sh", "no-such-program-thermowatch")


def test_present():
    require(True, "never shown")
    require_tools("sh")
"""


def run_cases(tmp_path: Path, ci: str | None) -> str:
    (tmp_path / "test_cases.py").write_text(CASES, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-rsf", "-p", "no:cacheprovider", "-c", os.devnull],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return done.stdout + done.stderr


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_outside_ci_a_missing_prerequisite_is_a_reported_skip(tmp_path: Path, ci: str) -> None:
    out = run_cases(tmp_path, ci)
    assert "1 passed, 2 skipped" in out, out
    assert "SKIPPED" in out and "missing prerequisite: a tool that is not here" in out, out
    assert "programs not found: no-such-program-thermowatch" in out, out


@pytest.mark.parametrize("ci", ["true", "TRUE", "1", "yes"])
def test_under_ci_a_missing_prerequisite_fails(tmp_path: Path, ci: str) -> None:
    out = run_cases(tmp_path, ci)
    assert "2 failed, 1 passed" in out, out
    assert "missing prerequisite under CI=true: a tool that is not here" in out, out
    assert "programs not found: no-such-program-thermowatch" in out, out


def test_missing_tools_looks_in_sbin_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # mosquitto lives in /usr/sbin, which a user's PATH (PATH=/usr/bin:/bin) may lack.
    monkeypatch.setenv("PATH", "/nonexistent")
    assert missing_tools("no-such-program-thermowatch") == ["no-such-program-thermowatch"]
    sbin = next(
        (p for p in (Path("/usr/sbin"), Path("/sbin")) if p.is_dir() and any(p.iterdir())), None
    )
    if sbin is not None:
        programs = [p for p in sorted(sbin.iterdir()) if p.is_file() and os.access(p, os.X_OK)]
        assert missing_tools(programs[0].name) == []


#: The skips that are not a missing prerequisite: a chaos step that needs the
#: step before it to have passed and a machine the Pi's hashed wheel set has no
#: wheels for (nothing to install), and a search server without the ISM plugin (no
#: registry reachable here carries it, so there is nothing `make deps` could install).
#: The NAB corpus goes through `require` too (benchmarks/nab/corpus.py's
#: require_corpus, tested in benchmarks/nab/test_corpus.py).
ALLOWED_SKIPS = {
    "tests/integration/test_pi_installer.py": "the hashed wheel set has no wheels for it",
    "tests/chaos/test_chaos_pipeline.py": 'pytest.skip("needs test_',
    "tests/integration/test_search_lifecycle.py": "has no Index State Management plugin",
}


def test_every_other_skip_goes_through_require() -> None:
    # A new `pytest.skip` for a missing tool would pass unnoticed in CI.
    skip = re.compile(r"pytest\.(skip\(|importorskip\(|mark\.skipif\()")
    found = []
    for path in sorted([*REPO.glob("tests/**/*.py"), *REPO.glob("benchmarks/**/test_*.py")]):
        rel = path.relative_to(REPO).as_posix()
        text = path.read_text(encoding="utf-8")
        if rel == "tests/unit/test_prerequisites.py" or not skip.search(text):
            continue
        allowed = ALLOWED_SKIPS.get(rel)
        if allowed is None or allowed not in text:
            found.append(rel)
    assert found == [], f"skips not through testsupport.prerequisites.require: {found}"

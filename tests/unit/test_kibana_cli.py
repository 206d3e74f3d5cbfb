"""``thermowatch kibana`` / ``python -m kibana``: generate, check, argument errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kibana.objects import build_objects
from thermowatch.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_python_dash_m_works() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kibana", "generate", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout


def test_no_sub_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kibana"]) == 2
    assert "generate" in capsys.readouterr().out


def test_generate_and_check_for_another_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "lab.ndjson"
    assert main(["kibana", "generate", "--prefix", "lab-", "--out", str(out)]) == 0
    assert main(["kibana", "check", "--prefix", "lab-", "--file", str(out)]) == 0
    assert "lab.ndjson: ok" in capsys.readouterr().out
    # the same file checked against the default prefix's indices is broken
    assert main(["kibana", "check", "--file", str(out)]) == 1
    assert "no mapping known for lab-readings-*" in capsys.readouterr().err


def test_check_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    objects = build_objects()
    lens = next(o for o in objects if o["type"] == "lens")
    layer = lens["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]["layer1"]
    for col in layer["columns"].values():
        col["sourceField"] = "nope"
    bad = tmp_path / "bad.ndjson"
    bad.write_text("".join(json.dumps(o) + "\n" for o in objects) + "garbage\n")
    assert main(["kibana", "check", "--file", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"line {len(objects) + 1}: not JSON" in err
    assert "field nope" in err and "problem(s) in bad.ndjson" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--url", "kibana:5601"], "url: must start with http"),  # key from KIBANA_API_KEY
        (["--url", "http://127.0.0.1:9", "--user", "u"], "set KIBANA_PASSWORD"),
    ],
)
def test_target_errors_are_clear(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KIBANA_PASSWORD", raising=False)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    assert main(["kibana", "status", *argv]) == 1
    assert message in capsys.readouterr().err

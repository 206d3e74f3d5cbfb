"""The Kibana NDJSON check is total (issue 14): any bytes give problems naming
the line (or the object), never a traceback."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kibana.app import committed_file, static_check
from kibana.check import MAX_DEPTH, parse_ndjson
from testsupport.hostile import CLASSES, Hostile

LINES = [line for line in committed_file().read_bytes().splitlines() if line.strip()]
ROOT = Path(__file__).resolve().parents[2]


def _lines_problems(data: bytes) -> list[str]:
    problems = static_check(data)
    for p in problems:
        str(p).encode("utf-8")  # printable: never a lone surrogate
    return [str(p) for p in problems]


@pytest.mark.parametrize("klass", CLASSES)
@given(rng=st.randoms(use_true_random=False))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_saved_objects_give_problems_not_exceptions(klass: str, rng: random.Random) -> None:
    hostile = Hostile(rng, golden=LINES)
    lines = list(LINES)
    for _ in range(rng.randint(1, 3)):
        lines[rng.randrange(len(lines))] = hostile.make(klass)
    _lines_problems(b"\n".join(lines))


@given(st.binary(max_size=2000))
@settings(max_examples=200, deadline=None)
def test_random_bytes_give_problems_not_exceptions(raw: bytes) -> None:
    _lines_problems(raw)


def _obj(**over: object) -> bytes:
    doc = {"type": "lens", "id": "x", "attributes": {}, "references": []}
    doc.update(over)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"\xff\xfe{}", "line 2: not UTF-8"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "line 2: nests deeper than"),
        (b'{"a": ' + b"9" * 5000 + b"}", "line 2: not JSON"),
        (_obj(type=["lens"]), "line 2: type and id must be strings"),
        (_obj(references=[1]), "line 2: lens/x: every reference must be an object"),
        (_obj(references=[{"type": [], "id": "a"}]), "line 2: lens/x: unexpected structure"),
        (_obj(attributes={"state": []}), "line 2: lens/x: unexpected structure"),
        (
            _obj(type="index-pattern", attributes={"title": "t", "timeFieldName": ["a"]}),
            "index-pattern/x: no mapping known for t",
        ),
        (
            _obj(type="dashboard", attributes={"panelsJSON": "[" * 5000}),
            "line 2: dashboard/x: unexpected structure",
        ),
        (_obj(typeMigrationVersion="1" * 5000 + ".0.0"), "line 2: lens/x: unexpected structure"),
        (_obj(id="\ud800\u202e"), "lens/\\ud800\\u202e"),
    ],
)
def test_unreadable_lines_are_named(line: bytes, problem: str) -> None:
    data = LINES[0] + b"\n" + line
    assert any(p.startswith(problem) for p in _lines_problems(data)), _lines_problems(data)


def test_a_lens_column_of_the_wrong_shape_is_named() -> None:
    # Found by `make fuzz`: the walk of a lens's columns runs only when its data
    # view is in the set, so the line is read with its data views present.
    n = next(i for i, line in enumerate(LINES) if json.loads(line)["type"] == "lens")
    doc = json.loads(LINES[n])
    layers = doc["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]
    layer = next(iter(layers.values()))
    layer["columns"][next(iter(layer["columns"]))] = ["not", "a", "column"]
    lines = list(LINES)
    lines[n] = json.dumps(doc).encode()
    problems = _lines_problems(b"\n".join(lines))
    assert any(
        p.startswith(f"line {n + 1}: lens/{doc['id']}: unexpected structure") for p in problems
    ), problems


def test_the_committed_file_still_passes() -> None:
    objects, problems = parse_ndjson(committed_file().read_bytes())
    assert problems == [] and len(objects) == len(LINES)


def test_the_cli_reports_a_file_that_is_not_utf8_by_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ndjson"
    bad.write_bytes(LINES[0] + b"\n\xff\n" + b"[" * 3000 + b"\n")
    run = subprocess.run(
        [sys.executable, "-m", "kibana", "check", "--file", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "bad.ndjson: line 2: not UTF-8" in run.stderr
    assert "bad.ndjson: line 3: nests deeper than" in run.stderr

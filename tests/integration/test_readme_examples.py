"""Every README example marked ``<!-- runnable -->`` runs as written on a fresh clone.

Each block runs in its own fresh copy of the checkout (the files a clone has),
with ``thermowatch`` on PATH running that copy, against the shared local stack;
see ``tests/readme_examples.py`` for the markers and what counts as a failure.
MQTT users a block adds and does not remove (it failed half-way) are removed
afterwards, so the shared stack is left as it was.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from deploy.local.stack import LocalStack
from tests.readme_examples import REPO, Example, fresh_copy, parse, readmes, run

pytestmark = pytest.mark.integration

RUNNABLE = [
    e
    for p in readmes()
    for e in parse(p.read_text(encoding="utf-8"), str(p.relative_to(REPO)))
    if e.kind == "run"
]


@pytest.mark.parametrize("example", RUNNABLE, ids=lambda e: e.id)
def test_readme_example_runs_as_written(
    example: Example, local_stack: LocalStack, tmp_path: Path
) -> None:
    clone = fresh_copy(tmp_path / "clone")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "thermowatch"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m thermowatch "$@"\n', encoding="utf-8")
    shim.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(clone),
    }
    users = set(local_stack.credentials())
    try:
        outcome = run(example, clone, env)
    finally:
        for extra in set(local_stack.credentials()) - users:
            local_stack.remove_mqtt_user(extra)
    assert outcome.ok, f"{example.id} failed:\n{example.code}\n{outcome.detail[-4000:]}"

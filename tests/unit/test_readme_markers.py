"""Every shell block of every README is marked runnable, run by CI, or excused with a reason.

The blocks marked runnable are run by ``tests/integration/test_readme_examples.py``;
here the markers are checked (no server needed), and the runner is shown to
fail a block that fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.readme_examples import REPO, Example, MarkerError, parse, readmes, run


@pytest.mark.parametrize("path", readmes(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_shell_block_has_a_valid_marker(path: Path) -> None:
    parse(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))


def test_the_readmes_users_follow_have_runnable_examples() -> None:
    runnable = {
        e.source
        for p in readmes()
        for e in parse(p.read_text(encoding="utf-8"), str(p.relative_to(REPO)))
        if e.kind == "run"
    }
    assert {"edge_agent/README.md", "deploy/local/README.md"} <= runnable


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("```bash\nls\n```\n", "X.md:1: a ```bash block needs a marker"),
        ("<!-- runnable: ci -->\n```sh\nmake test\n```\n", "X.md:2: <!-- runnable: ci --> needs"),
        ("<!-- runnable: no -->\n```sh\nls\n```\n", "needs a reason"),
        ("<!-- runnable: maybe later -->\n```sh\nls\n```\n", "unknown marker 'maybe'"),
        (
            "<!-- runnable -->\n```python\nx = 1\n```\n",
            "X.md:1: a runnable marker before a ```python",
        ),
    ],
)
def test_wrong_markers_are_errors_naming_the_line(text: str, error: str) -> None:
    with pytest.raises(MarkerError, match=error.replace("(", r"\(").replace("*", r"\*")):
        parse(text, "X.md")


def test_marker_kinds_and_unmarked_other_blocks() -> None:
    text = (
        "```\na diagram\n```\n"
        "<!-- runnable: ci make test is the suite -->\n```sh\nmake test\n```\n"
        "<!-- runnable: no needs a Pi -->\n```sh\nsudo reboot\n```\n"
        "<!--runnable-->\n```console\n$ echo hi\nhi\n```\n"
    )
    got = [(e.line, e.lang, e.kind, e.reason) for e in parse(text, "X.md")]
    assert got == [
        (5, "sh", "ci", "make test is the suite"),
        (9, "sh", "no", "needs a Pi"),
        (13, "console", "run", ""),
    ]


@pytest.mark.parametrize(
    ("lang", "code", "ok"),
    [
        ("sh", "true\necho fine\n", True),
        ("sh", "false\necho the block goes on\n", False),  # set -e: the first failure fails
        ("sh", "false | cat\n", False),  # pipefail
        ("sh", "echo 'event=mqtt_refused reason=Not authorized' >&2\n", False),
        ("console", "$ echo hi\nhi\n$ echo 'error: x' >&2; exit 1\nerror: x\n", True),
        ("console", "$ echo hi\nhello\n", False),
    ],
)
def test_the_runner_fails_a_failing_block(tmp_path: Path, lang: str, code: str, ok: bool) -> None:
    example = Example("X.md", 1, lang, "run", "", code)
    assert run(example, tmp_path, dict(os.environ), timeout=30).ok is ok


def test_the_runner_fails_a_block_that_does_not_end(tmp_path: Path) -> None:
    example = Example("X.md", 1, "sh", "run", "", "sleep 30\n")
    outcome = run(example, tmp_path, dict(os.environ), timeout=0.5)
    assert not outcome.ok and "timed out" in outcome.detail

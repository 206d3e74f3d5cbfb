"""The shell examples of the READMEs: which ones run, and running them as written.

Every ```` ```sh ```` / ```` ```bash ```` / ```` ```shell ```` / ```` ```console ```` block
in a ``README.md`` is preceded by one marker line, an HTML comment (GitHub
does not render it, so the README looks the same):

* ``<!-- runnable -->``: the test runs it as written, in a fresh copy of the
  checkout, against the local stack; it must exit 0 (a ``console`` block: each
  ``$ command``'s output must be the lines under it);
* ``<!-- runnable: ci REASON -->``: run by CI itself (``make demo``, ``make test``);
* ``<!-- runnable: no, REASON -->``: cannot run here as written (a Pi, root, a
  synopsis with placeholders); the reason says why.

A shell block without a marker is an error, so a new example is either run or
explicitly excused.

>>> text = '<!-- runnable -->\\n```sh\\necho hi\\n```\\n'
>>> [(e.kind, e.code) for e in parse(text, "X.md")]
[('run', 'echo hi\\n')]
>>> parse('```sh\\necho hi\\n```\\n', "X.md")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
tests.readme_examples.MarkerError: X.md:1: a ```sh block needs a marker line before it: ...
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["Example", "MarkerError", "Outcome", "fresh_copy", "parse", "readmes", "run"]

REPO = Path(__file__).resolve().parents[1]
SHELL_LANGS = frozenset({"sh", "bash", "shell", "console"})
_MARKER = re.compile(r"^<!--\s*runnable(?::\s*(?P<kind>[A-Za-z]+),?\s*(?P<reason>.*?))?\s*-->\s*$")
_FENCE = re.compile(r"^```\s*(?P<lang>[A-Za-z0-9_+-]*)")
#: Output that means the example did not work even when it exited 0 (an edge
#: agent keeps running, and retrying, when the broker refuses its login).
FAILURE_OUTPUT = re.compile(r"event=mqtt_refused|Traceback \(most recent call last\)")
Kind = Literal["run", "ci", "no"]


class MarkerError(ValueError):
    """A README's markers are wrong; the message says where (``file:line``)."""


@dataclass(frozen=True)
class Example:
    """One shell block of a README."""

    source: str
    #: Line of the opening fence (1-based).
    line: int
    lang: str
    kind: Kind
    reason: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str


def parse(text: str, source: str) -> list[Example]:
    """The shell blocks of one markdown text with their markers."""
    lines = text.splitlines()
    found: list[Example] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start, lang = i, fence.group("lang")
        end = start + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        marker = _MARKER.match(lines[start - 1]) if start > 0 else None
        if lang in SHELL_LANGS:
            where = f"{source}:{start + 1}"
            if marker is None:
                raise MarkerError(
                    f"{where}: a ```{lang} block needs a marker line before it: "
                    "<!-- runnable -->, <!-- runnable: ci REASON --> or "
                    "<!-- runnable: no REASON -->"
                )
            kind: Kind = "run"
            reason = marker.group("reason") or ""
            if marker.group("kind") == "ci":
                kind = "ci"
            elif marker.group("kind") == "no":
                kind = "no"
            elif marker.group("kind") is not None:
                raise MarkerError(f"{where}: unknown marker {marker.group('kind')!r} (ci or no)")
            if kind != "run" and not reason:
                raise MarkerError(f"{where}: <!-- runnable: {kind} --> needs a reason")
            code = "".join(f"{line}\n" for line in lines[start + 1 : end])
            found.append(Example(source, start + 1, lang, kind, reason, code))
        elif marker is not None:
            raise MarkerError(f"{source}:{start}: a runnable marker before a ```{lang} block")
        i = end + 1
    return found


def readmes(root: Path = REPO) -> list[Path]:
    """Every README.md of the checkout (not in hidden or build directories)."""
    skip = {"__pycache__", "node_modules", "build", "dist"}
    return sorted(
        p
        for p in root.rglob("README.md")
        if not any(part.startswith(".") or part in skip for part in p.relative_to(root).parts)
    )


def fresh_copy(dest: Path, root: Path = REPO) -> Path:
    """The checkout's files as a fresh clone has them (tracked and new, not ignored)."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, names):
        src = root / os.fsdecode(name)
        if src.is_file():
            target = dest / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


def _console_steps(code: str) -> list[tuple[str, str]]:
    """``[(command, expected output)]`` of a console block (``$ `` starts a command)."""
    steps: list[tuple[str, list[str]]] = []
    for line in code.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    return [(cmd, "\n".join(out).strip()) for cmd, out in steps]


def run(example: Example, cwd: Path, env: dict[str, str], timeout: float = 180.0) -> Outcome:
    """Run one example in ``cwd``; not ok when it fails, times out or prints a failure."""
    steps = (
        _console_steps(example.code)
        if example.lang == "console"
        else [("set -eo pipefail\n" + example.code, None)]
    )
    for command, expected in steps:
        try:
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return Outcome(False, f"timed out after {timeout:.0f}s: {command}\n{exc.output!r}")
        output = done.stdout + done.stderr
        if expected is not None:
            if output.strip() != expected:
                return Outcome(False, f"$ {command}\nexpected:\n{expected}\ngot:\n{output}")
            continue
        if done.returncode != 0:
            return Outcome(False, f"exit {done.returncode}\n{output}")
        bad = FAILURE_OUTPUT.search(output)
        if bad:
            return Outcome(False, f"printed {bad.group(0)!r}\n{output}")
    return Outcome(True, "")

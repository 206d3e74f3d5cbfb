"""docs/security.md names a test for every hostile-input class: each must exist.

A row's tests are written ``tests/<file>.py::test_name`` or, after a file was
named in the same cell, ``::test_name`` for another test of that file.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
_REF = re.compile(r"`((?:tests|benchmarks)/[\w/]+\.py)?::(\w+)")


def _references() -> list[tuple[str, str]]:
    refs: list[tuple[str, str]] = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        for cell in line.split("|"):
            current = ""
            for match in _REF.finditer(cell):
                current = match.group(1) or current
                assert current, f"docs/security.md: ::{match.group(2)} without a file before it"
                refs.append((current, match.group(2)))
    return refs


def test_every_test_the_security_doc_names_exists() -> None:
    refs = _references()
    assert len(refs) >= 30  # the table is there
    missing = []
    for path, name in refs:
        file = ROOT / path
        text = file.read_text(encoding="utf-8") if file.is_file() else ""
        if not re.search(rf"^(?:async )?def {name}\(", text, re.MULTILINE):
            missing.append(f"{path}::{name}")
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"

"""The house rules that import-linter cannot see (docs/architecture.md).

``lint-imports`` (in ``make lint``) holds the floors of the product packages.
These tests hold the rest: tests and benchmarks never import each other, and
no product file grows past ~600 lines unless its package README says why it
is one unit.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: The product: the packages that pyproject.toml installs.
PRODUCT = tuple(
    p.rstrip("*")
    for p in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]["include"]
)
MAX_LINES = 600
#: Product files allowed above MAX_LINES, each with the README that says why.
LONG_FILES: dict[str, str] = {}


def _python_files(top: str) -> list[Path]:
    return sorted(p for p in (REPO / top).rglob("*.py") if "__pycache__" not in p.parts)


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize(
    ("importer", "imported"), [("tests", "benchmarks"), ("benchmarks", "tests")]
)
def test_tests_and_benchmarks_never_import_each_other(importer: str, imported: str) -> None:
    offenders = [
        str(p.relative_to(REPO)) for p in _python_files(importer) if imported in _imported_roots(p)
    ]
    assert not offenders, f"{importer} importing {imported}: {offenders}"


def test_the_product_packages_are_the_known_floors() -> None:
    assert set(PRODUCT) == {
        "telemetry_contract",
        "stagekit",
        "edge_agent",
        "gateway",
        "cloud_processor",
        "kibana",
        "deploy",
        "thermowatch",
    }


def test_no_product_file_is_a_grab_bag() -> None:
    long = {
        str(p.relative_to(REPO)): n
        for top in PRODUCT
        for p in _python_files(top)
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    unexplained = {f: n for f, n in long.items() if f not in LONG_FILES}
    assert not unexplained, f"above {MAX_LINES} lines: {unexplained}"
    for path, readme in LONG_FILES.items():
        assert Path(path).name in (REPO / readme).read_text(encoding="utf-8"), (
            f"{readme} must say why {path} is one unit"
        )

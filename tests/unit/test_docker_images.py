"""Each container image ships every package its command imports (checked statically).

An image copies only the packages it needs into its build stage; a package
missing there builds a wheel without it, and the container fails at start with
``ModuleNotFoundError``. This follows the imports (module level and inside
functions) from the image's entry point -- the ``thermowatch`` command and the
stage it runs -- and checks every first-party package reached is copied.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Our packages: the ones pyproject.toml installs.
FIRST_PARTY = {
    p.rstrip("*")
    for p in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]["include"]
}
#: Image -> the stage package its entry point (``thermowatch <stage>``) runs.
IMAGES = {"gateway.Dockerfile": "gateway", "processor.Dockerfile": "cloud_processor"}
ENTRY = ("thermowatch/__init__.py", "thermowatch/__main__.py", "thermowatch/cli.py")


def _file_of(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in FIRST_PARTY}


def reached_packages(start: list[Path]) -> set[str]:
    """First-party top-level packages reached from the files of ``start``."""
    seen: set[Path] = set()
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path):
            parts = module.split(".")
            for i in range(1, len(parts) + 1):  # a.b.c also runs a and a.b
                found = _file_of(".".join(parts[:i]))
                if found is not None and found not in seen:
                    todo.append(found)
    return {p.relative_to(REPO).parts[0] for p in seen}


def copied_packages(dockerfile: Path) -> set[str]:
    out = set()
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not words[1].startswith("--") and (REPO / words[1]).is_dir():
            out.add(words[1].rstrip("/"))
    return out


@pytest.mark.parametrize(("dockerfile", "stage"), sorted(IMAGES.items()))
def test_the_image_copies_every_package_its_command_imports(dockerfile: str, stage: str) -> None:
    start = [REPO / f for f in ENTRY] + sorted((REPO / stage).rglob("*.py"))
    needed = reached_packages(start)
    assert {stage, "stagekit", "telemetry_contract", "thermowatch"} <= needed
    missing = needed - copied_packages(REPO / "deploy" / "docker" / dockerfile)
    assert not missing, f"{dockerfile} does not COPY {sorted(missing)}"

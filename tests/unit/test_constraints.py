"""constraints.txt (what `make deps` installs) agrees with pyproject.toml's ranges."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]


def pins() -> dict[str, Version]:
    out: dict[str, Version] = {}
    for n, line in enumerate((REPO / "constraints.txt").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"constraints.txt:{n}: not 'name==version': {line!r}"
        assert canonicalize_name(name) not in out, f"constraints.txt:{n}: {name} pinned twice"
        out[canonicalize_name(name)] = Version(version)
    return out


def declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra if not r.startswith("thermowatch[")]
    return reqs


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    pinned = pins()
    for req in declared():
        version = pinned.get(canonicalize_name(req.name))
        assert version is not None, f"{req.name} is in pyproject.toml but not constraints.txt"
        assert req.specifier.contains(version, prereleases=True), (
            f"constraints.txt pins {req.name}=={version}, outside pyproject's {req.specifier}"
        )


def test_the_pins_are_sorted_as_make_constraints_writes_them() -> None:
    """``name==version`` lines, each name once (checked by pins()), sorted."""
    names = list(pins())
    assert names == sorted(names)

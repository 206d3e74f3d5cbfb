"""Print constraints.txt: the installed versions of thermowatch's dependency tree.

    make constraints        # after a green `make test` on newer versions

Walks the requirements of ``thermowatch[dev,bench]`` as installed (with the
extras each requirement asks for) and pins every distribution it reaches.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HEADER = """\
# Versions the test suite last passed with (make deps installs with -c constraints.txt).
# pyproject.toml keeps ranges for users who install the package; this file keeps
# CI and a fresh checkout on exactly what was tested, so that a new release of a
# dependency (a linter with new rules, a library that words its output differently)
# cannot break 'make test' between two commits. Refresh: pip install -U -e '.[dev,bench]',
# make test, then make constraints (writes this file from what is installed).
"""


def pins(root: str = "thermowatch", extras: tuple[str, ...] = ("dev", "bench")) -> dict[str, str]:
    """``{distribution: version}`` for everything ``root[extras]`` needs, as installed."""
    found: dict[str, str] = {}
    walked: set[tuple[str, tuple[str, ...]]] = set()

    def walk(name: str, wanted: tuple[str, ...]) -> None:
        if (canonicalize_name(name), wanted) in walked:
            return
        walked.add((canonicalize_name(name), wanted))
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            return  # an optional dependency for another platform or Python
        found[canonicalize_name(name)] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            marker = req.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in ("", *wanted)):
                walk(req.name, tuple(sorted(req.extras)))

    walk(root, extras)
    found.pop(canonicalize_name(root), None)
    found.pop("setuptools", None)  # build tooling, managed by pip
    return found


if __name__ == "__main__":
    print(HEADER + "".join(f"{k}=={v}\n" for k, v in sorted(pins().items())), end="")

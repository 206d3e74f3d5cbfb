"""A test's missing prerequisite: a skip on a developer's machine, a failure in CI.

A tool the tests drive for real (``systemd-analyze``, ``openssl``, ``strace``,
Chromium, the Kafka jars, a tmpfs mount) is installed by ``make deps``. A test
that finds one missing calls :func:`require`: on a developer's machine it is
skipped (the reason shows in pytest's ``-ra`` summary); with ``CI=true``, as
``.ci/run`` sets, it fails, so a CI machine that lacks a tool cannot pass
without running the test.

Data that no package registry serves (the NAB corpus of ``benchmarks/nab``)
is a prerequisite too: ``make deps`` cannot install it, so its ``fix`` says
where the tests looked for it and how to point them at it.
"""

from __future__ import annotations

import os
import shutil

import pytest

__all__ = ["CI_ENV", "in_ci", "missing_tools", "require", "require_tools"]

#: The environment variable CI services set (GitHub Actions, GitLab CI, ``.ci/run``).
CI_ENV = "CI"


def in_ci() -> bool:
    """True when ``$CI`` says this is a CI run (``true``, ``1`` or ``yes``, any case)."""
    return os.environ.get(CI_ENV, "").strip().lower() in {"true", "1", "yes"}


def require(ok: bool, why: str, fix: str = "make deps installs it") -> None:
    """Go on when ``ok``; otherwise skip the test, or fail it under ``CI=true``.

    ``why`` names what is missing and ``fix`` how to provide it; both are the
    skip's (or failure's) reason.
    """
    if ok:
        return
    if in_ci():
        pytest.fail(f"missing prerequisite under {CI_ENV}=true: {why} ({fix})", pytrace=False)
    pytest.skip(f"missing prerequisite: {why} ({fix})")


def missing_tools(*names: str) -> list[str]:
    """The programs of ``names`` not on ``PATH`` (nor in the sbin directories).

    >>> missing_tools("sh", "no-such-tool-here")
    ['no-such-tool-here']
    """
    sbin = os.pathsep.join(("/usr/sbin", "/usr/local/sbin", "/sbin"))
    path = os.environ.get("PATH", os.defpath) + os.pathsep + sbin
    return [n for n in names if shutil.which(n, path=path) is None]


def require_tools(*names: str) -> None:
    """:func:`require` that every program of ``names`` is installed."""
    missing = missing_tools(*names)
    require(not missing, "programs not found: " + ", ".join(missing))

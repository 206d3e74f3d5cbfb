"""Fixtures shared by every test tier: the real local stack (deploy.local.stack).

``stack`` reuses services that are already healthy and starts the others; at
the end of the session it stops only what it started, unless
THERMOWATCH_KEEP_STACK=1. Set THERMOWATCH_STACK_DIR / THERMOWATCH_*_PORT to use
another stack.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from deploy.local.stack import SERVICES, LocalStack


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    """The LocalStack object, with every service up and healthy (chaos tests use it)."""
    stack = LocalStack()
    # A running broker started from an older config template (an upgraded
    # checkout) is restarted by `up`, so the tests see the shipped limits.
    missing = [
        name
        for name in SERVICES
        if not stack.is_healthy(name) or stack.service(name).config_changed()
    ]
    if missing:
        result = stack.up(missing, timeout=180.0)
        started = [name for name, what in result.items() if what == "started"]
    else:
        started = []
    yield stack
    if started and os.environ.get("THERMOWATCH_KEEP_STACK") != "1":
        stack.down(started)


class _LiveEndpoints(dict[str, dict[str, Any]]):
    """``LocalStack.endpoints()`` read afresh at each ``stack[name]``: a password a
    test rotates, or a service a test restarts, never leaves a stale copy behind."""

    def __init__(self, local_stack: LocalStack) -> None:
        super().__init__(local_stack.endpoints())
        self._stack = local_stack

    def __getitem__(self, name: str) -> dict[str, Any]:
        fresh = self._stack.endpoints()
        self.update(fresh)
        return fresh[name]


@pytest.fixture(scope="session")
def stack(local_stack: LocalStack) -> dict[str, dict[str, Any]]:
    """Endpoints of the running stack: see LocalStack.endpoints()."""
    return _LiveEndpoints(local_stack)

"""Fixtures of the integration tier beyond the stack (``tests/conftest.py``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from thermowatch.web.testing import browser_missing, headless_chromium


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by selenium (quit afterwards).

    Missing pieces skip the test for a user who cannot install them (not
    root) and fail it where ``make deps`` could have.
    """
    missing = browser_missing()
    if missing:
        why = "missing: " + ", ".join(missing) + " (make deps installs them)"
        if os.geteuid() != 0:
            pytest.skip(f"{why}; not root, so not installable here")
        pytest.fail(why)
    with headless_chromium() as driver:
        yield driver

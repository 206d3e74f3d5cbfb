"""Fixtures of the integration tier beyond the stack (``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from testsupport.prerequisites import require
from thermowatch.web.testing import browser_missing, headless_chromium


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by selenium (quit afterwards).

    A missing piece skips the test on a developer's machine and fails it
    under ``CI=true`` (``make deps`` installs them).
    """
    missing = browser_missing()
    require(not missing, ", ".join(missing))
    with headless_chromium() as driver:
        yield driver

"""systemd notifications: READY at start, WATCHDOG pings, STOPPING at shutdown.

The unit is ``Type=notify`` with ``WatchdogSec=30``: the main loop pings once
a second, so a loop stuck for 30 s gets the agent restarted. Without
``$NOTIFY_SOCKET`` (not under systemd: tests, the simulator) it does nothing.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

__all__ = ["Notifier", "SystemdNotifier"]


class Notifier(Protocol):
    """Where the agent reports its state (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``)."""

    def notify(self, state: str) -> None: ...


class SystemdNotifier:
    """sd_notify through the ``sdnotify`` package (no-op without $NOTIFY_SOCKET)."""

    def __init__(self) -> None:
        self._n: Any = None
        if os.environ.get("NOTIFY_SOCKET"):
            import sdnotify

            self._n = sdnotify.SystemdNotifier()

    def notify(self, state: str) -> None:
        if self._n is not None:
            self._n.notify(state)

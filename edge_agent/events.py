"""The main loop's inbox: what helper threads report, and one descriptor to wait on.

Helper threads only report; the main thread decides (see :mod:`edge_agent.app`).
The sensor pool appends samples to :attr:`WakeQueue.samples` (a deque: no
wake-up per sample) and calls :meth:`WakeQueue.wake` once per round; the MQTT
connector thread puts events. Once :meth:`~WakeQueue.open`, every ``put``
also makes :meth:`~WakeQueue.fileno` readable, so the main loop waits in one
``select`` on it and the MQTT socket (paho runs on the main thread, see
:mod:`edge_agent.mqtt`).

>>> q = WakeQueue()
>>> q.open()
>>> q.put("event"); q.wake()
>>> q.clear_wakeups(); q.drain() == ["event", WAKE_UP]
True
>>> q.close()
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import threading
from typing import Any, Final

from edge_agent.sensors import Sample

__all__ = ["WAKE_UP", "WakeQueue"]

#: Put by :meth:`WakeQueue.wake`: an event that only wakes the loop.
WAKE_UP: Final = object()


class WakeQueue(queue.Queue[Any]):
    """The main loop's event queue and sample deque; ``put`` also signals :meth:`fileno`."""

    def __init__(self) -> None:
        super().__init__()
        #: Samples of the sensor pool, oldest first (appended on its worker threads).
        self.samples: collections.deque[Sample] = collections.deque()
        self._r = self._w = -1
        # put() may run on an abandoned sensor thread after close(): never write to a
        # descriptor number that has been closed (and perhaps reused).
        self._fd_lock = threading.Lock()

    def open(self) -> None:
        """Create the wake-up pipe (idempotent)."""
        with self._fd_lock:
            if self._r < 0:
                self._r, self._w = os.pipe()
                os.set_blocking(self._r, False)
                os.set_blocking(self._w, False)

    def close(self) -> None:
        """Close the wake-up pipe (idempotent); ``put`` still queues, silently."""
        with self._fd_lock:
            if self._r >= 0:
                os.close(self._r)
                os.close(self._w)
                self._r = self._w = -1

    def fileno(self) -> int:
        """The read end of the wake-up pipe (-1 until :meth:`open`)."""
        return self._r

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        with self._fd_lock:
            if self._w >= 0:
                with contextlib.suppress(BlockingIOError):  # full pipe: already awake
                    os.write(self._w, b"\0")

    def wake(self) -> None:
        """Wake the loop with nothing to say (the sensor pool: "a round is done")."""
        self.put(WAKE_UP)

    def clear_wakeups(self) -> None:
        """Empty the pipe (before draining the queue, so no wake-up is lost)."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 4096):
                pass

    def drain(self) -> list[Any]:
        """Every event queued so far, oldest first, without waiting."""
        out: list[Any] = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self.get_nowait())
        return out

    def take_samples(self) -> list[Sample]:
        """Every sample collected so far, oldest first."""
        pending = self.samples
        out: list[Sample] = []
        while pending:
            out.append(pending.popleft())
        return out

"""One capped exponential backoff for every retry and reconnect loop.

:class:`Backoff` hands out the next delay and grows it up to a cap;
``reset()`` after a success starts again from the first delay. Jitter spreads
many clients that lost the same server so that they do not come back in step:
``"equal"`` waits between half and all of the delay, ``"full"`` anywhere
between the first delay and the current one. :func:`sleep_or_stop` waits for a
delay but returns at once when the stage is told to stop, so that a stage in
a retry loop still stops promptly on SIGTERM.

Written here rather than taken from tenacity: the loops that use it are
reconnect supervisors and write paths whose delay lives across calls (it
grows over several failed batches and resets when a connection proves good),
in threads as well as coroutines; tenacity's model is "retry this one call",
and the edge agent on a Pi would carry a dependency for forty lines.

>>> b = Backoff(0.5, 4.0)
>>> [b.next() for _ in range(5)]
[0.5, 1.0, 2.0, 4.0, 4.0]
>>> b.attempts
5
>>> b.reset(); b.next()
0.5
>>> half = Backoff(1.0, 8.0, jitter="equal", rng=lambda: 0.0)
>>> [half.next() for _ in range(3)]
[0.5, 1.0, 2.0]
>>> full = Backoff(1.0, 8.0, jitter="full", rng=lambda: 1.0)
>>> [full.next() for _ in range(4)]
[1.0, 2.0, 4.0, 8.0]
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Literal

__all__ = ["Backoff", "Jitter", "sleep_or_stop"]

Jitter = Literal["none", "equal", "full"]


class Backoff:
    """Delays ``initial_s``, ``initial_s * factor``, ... capped at ``max_s``."""

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        *,
        factor: float = 2.0,
        jitter: Jitter = "none",
        rng: Callable[[], float] = random.random,
    ) -> None:
        if initial_s <= 0 or max_s < initial_s or factor < 1:
            raise ValueError(
                f"backoff: need 0 < initial_s <= max_s and factor >= 1, "
                f"got {initial_s}, {max_s}, {factor}"
            )
        self.initial_s = initial_s
        self.max_s = max_s
        self._factor = factor
        self._jitter = jitter
        self._rng = rng
        self._base = initial_s
        #: Delays handed out since the last reset.
        self.attempts = 0

    @property
    def current_s(self) -> float:
        """The un-jittered delay the next :meth:`next` starts from."""
        return self._base

    def next(self) -> float:
        """The delay to wait now; the one after it is longer, up to ``max_s``."""
        base = self._base
        self._base = min(base * self._factor, self.max_s)
        self.attempts += 1
        if self._jitter == "equal":
            return base * (0.5 + self._rng() / 2)
        if self._jitter == "full":
            return self.initial_s + self._rng() * (base - self.initial_s)
        return base

    def reset(self) -> None:
        """Start again from ``initial_s`` (after a success)."""
        self._base = self.initial_s
        self.attempts = 0


async def sleep_or_stop(delay_s: float, stop: asyncio.Event | None) -> bool:
    """Sleep ``delay_s``; True at once if ``stop`` is (or becomes) set.

    >>> async def demo():
    ...     stop = asyncio.Event(); stop.set()
    ...     return await sleep_or_stop(3600, stop)
    >>> asyncio.run(demo())
    True
    """
    if stop is None:
        await asyncio.sleep(delay_s)
        return False
    if stop.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay_s)
    return stop.is_set()

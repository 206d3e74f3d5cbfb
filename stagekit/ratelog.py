"""Rate-limited log lines, for events an attacker can repeat at will.

A stage logs one line per rejected message, skipped record or refused
config; a hostile producer can send thousands a second, and each line costs
disk, journald's rate limit and the attention of whoever reads the log. A
:class:`RateLimitedLog` lets through at most ``lines`` lines per ``per_s``
seconds for each key (an event or a reason, taken from a small fixed set,
never from the input), counts the lines it holds back, and reports them on
the next line it lets through for that key (``suppressed=N``). Exact counts
belong in metrics, which every caller keeps; the log shows that something
happens, and how often, without growing with the input.

A key's window opens with the first line let through; lines beyond
``lines`` within it are held back. At most ``max_keys`` keys are
remembered: the oldest key is forgotten first (its held-back count with it),
so memory stays bounded even if a caller's keys were not.

Hand-written: the standard library's logging has no rate limit, and this is
a few lines rather than a dependency.

>>> t = [0.0]
>>> budget = RateLimitedLog(lines=2, per_s=10.0, clock=lambda: t[0])
>>> [budget.take("not_json") for _ in range(4)]  # None: hold this line back
[0, 0, None, None]
>>> budget.take("too_large")  # each key has its own budget
0
>>> t[0] = 10.0
>>> budget.take("not_json")  # a new window: log, and say 2 lines were held back
2
>>> budget.suppressed  # held back in all, since the start
2
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

__all__ = ["DEFAULT_MAX_KEYS", "RateLimitedLog"]

#: Keys remembered at once (the oldest is forgotten first).
DEFAULT_MAX_KEYS: Final = 1024


class _Window:
    """One key's window: when it opened, lines let through in it, lines held back."""

    __slots__ = ("held", "start", "used")

    def __init__(self, start: float) -> None:
        self.start = start
        self.used = 0
        self.held = 0


class RateLimitedLog:
    """At most ``lines`` log lines per ``per_s`` seconds per key; the rest are counted."""

    __slots__ = ("_clock", "_keys", "_lines", "_max_keys", "_per_s", "suppressed")

    def __init__(
        self,
        *,
        lines: int = 1,
        per_s: float = 10.0,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lines < 1 or per_s <= 0 or max_keys < 1:
            raise ValueError("lines and max_keys must be >= 1, per_s > 0")
        self._lines = lines
        self._per_s = per_s
        self._max_keys = max_keys
        self._clock = clock
        self._keys: dict[str, _Window] = {}
        #: Lines held back in all, since the start.
        self.suppressed = 0

    def take(self, key: str = "") -> int | None:
        """None: hold the line back; else log it, saying how many were held back before it."""
        now = self._clock()
        state = self._keys.get(key)
        if state is None:
            if len(self._keys) >= self._max_keys:
                del self._keys[next(iter(self._keys))]
            state = self._keys[key] = _Window(now)
        elif now - state.start >= self._per_s:
            state.start, state.used = now, 0
        if state.used >= self._lines:
            state.held += 1
            self.suppressed += 1
            return None
        state.used += 1
        held, state.held = state.held, 0
        return held

    def log(
        self, logger: logging.Logger, level: int, msg: str, *args: object, key: str = ""
    ) -> bool:
        """``logger.log(level, msg + " suppressed=%d", *args, held)`` unless held back.

        ``msg`` and ``args`` are the usual ``%``-style message; text from the
        input goes in ``args`` through :func:`telemetry_contract.printable`.
        True if the line was let through.
        """
        held = self.take(key)
        if held is None:
            return False
        logger.log(level, msg + " suppressed=%d", *args, held)
        return True

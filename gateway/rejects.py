"""Log lines about rejected input: sanitised, bounded, and rate-limited.

A device decides what its topic, ids and field names contain, so text from a
message never reaches the log as it is: :func:`telemetry_contract.printable`
escapes what is not printable (control characters, line breaks, lone
surrogates, right-to-left marks), then cuts the result to a bound.

A flood of bad input must not flood the log: :class:`RejectLog` writes one
line per event and reason, at most once per ``interval_s``; the lines it
held back are counted and reported on the next line (``suppressed=N``). The
metrics keep the exact counts.

Hand-written: the standard library's logging has no rate limit, and the few
lines here are cheaper than a dependency.

>>> clock = iter([0.0, 1.0, 2.0, 12.0]).__next__
>>> book = RejectLog(interval_s=10.0, clock=clock)
>>> [book.allow("not_json") for _ in range(4)]
[(True, 0), (False, 0), (False, 0), (True, 2)]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from telemetry_contract import printable

__all__ = ["DEFAULT_TEXT_LIMIT", "RejectLog"]

#: Longest piece of device-controlled text in one log line, in characters.
DEFAULT_TEXT_LIMIT: Final = 200
#: Distinct keys remembered before the book starts over (bounded memory).
_MAX_KEYS: Final = 1024


class RejectLog:
    """Decides which rejection gets a log line: the first per key, then one per interval."""

    def __init__(
        self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval_s
        self._clock = clock
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str) -> tuple[bool, int]:
        """``(log it?, lines held back since the last one for this key)``."""
        now = self._clock()
        due = self._next.get(key)
        if due is not None and now < due:
            self._held[key] = self._held.get(key, 0) + 1
            return False, 0
        if len(self._next) >= _MAX_KEYS and key not in self._next:
            self._next.clear()
            self._held.clear()
        self._next[key] = now + self._interval
        return True, self._held.pop(key, 0)

    def log(
        self,
        logger: logging.Logger,
        level: int,
        key: str,
        event: str,
        **fields: object,
    ) -> bool:
        """Log ``event=<event> k=v ... suppressed=N`` unless rate-limited; values sanitised."""
        ok, held = self.allow(key)
        if ok and logger.isEnabledFor(level):
            parts = " ".join(
                f"{name}={printable(str(value), DEFAULT_TEXT_LIMIT)}"
                for name, value in fields.items()
            )
            logger.log(level, "event=%s %s suppressed=%d", event, parts, held)
        return ok

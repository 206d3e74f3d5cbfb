"""The write chain: writes (and window flushes) one at a time, in batch order.

While a write runs, the loop keeps fetching and evaluating, and the batches
it prepares meanwhile are merged into the next write (:class:`PendingWrite`),
so a slow bulk request neither holds back the rules nor multiplies into many
small ones; the loop waits (:meth:`WriteChain.throttle`) only when that next
write has grown to ``depth`` batches' worth of readings, or ``depth`` steps
are queued. A failed step fails every step after it, so nothing written
after a failure is ever committed; the failure is re-raised to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

from cloud_processor.batches import Prepared

__all__ = ["WRITE_DEPTH", "PendingWrite", "WriteChain"]

#: Writes (a batch's bulk requests, or a window flush) that may wait on the
#: write chain while the loop fetches and evaluates the next batches.
WRITE_DEPTH: Final = 4

Step = Coroutine[Any, Any, None]


@dataclass
class PendingWrite:
    """Prepared batches waiting for one write: while a write runs, the batches
    fetched meanwhile are merged here and go out together in the next one."""

    batch: Prepared = field(default_factory=Prepared)
    #: Publishes the batches' alert changes (the last one waits for those before it).
    notified: asyncio.Task[None] | None = None


class WriteChain:
    """Runs ``write(pending)`` steps one after another; see the module docstring."""

    def __init__(
        self,
        write: Callable[[PendingWrite], Step],
        *,
        max_batch: int,
        depth: int = WRITE_DEPTH,
    ) -> None:
        self._write = write
        self._depth = depth
        self._max_readings = depth * max_batch
        self._inflight: asyncio.Task[None] | None = None  # the last step on the chain
        self._queued: deque[asyncio.Task[None]] = deque()
        self._open: PendingWrite | None = None  # the write on the chain not started yet

    def add(self, batch: Prepared, notified: asyncio.Task[None] | None) -> None:
        """Queue ``batch`` for writing: merged into the next write not yet started."""
        pending = self._open
        if pending is None:
            pending = self._open = PendingWrite()
            self._chain(self._run(pending))
        pending.batch.merge(batch)
        if notified is not None:
            pending.notified = notified

    def then(self, step: Step) -> asyncio.Task[None]:
        """Run ``step`` after everything on the chain; batches added later are
        written after it. Returns the step's task."""
        self._open = None
        return self._chain(step)

    async def _run(self, pending: PendingWrite) -> None:
        if self._open is pending:
            self._open = None  # batches prepared from now on go to the next write
        await self._write(pending)

    def _chain(self, step: Step) -> asyncio.Task[None]:
        prev = self._inflight
        task = self._inflight = asyncio.create_task(self._after(prev, step))
        self._queued.append(task)
        return task

    @staticmethod
    async def _after(prev: asyncio.Task[None] | None, step: Step) -> None:
        try:
            if prev is not None:
                await prev  # a failure there fails this one too: nothing later is committed
        except BaseException:
            step.close()
            raise
        await step

    async def throttle(self) -> None:
        """Re-raise a failed write; wait while too many writes are queued."""
        while self._queued and self._queued[0].done():
            self._queued.popleft().result()
        while len(self._queued) > self._depth or (
            self._open is not None and len(self._open.batch.readings) >= self._max_readings
        ):
            await self._queued.popleft()

    async def drain(self) -> None:
        """Wait for every queued step (and re-raise the first error)."""
        self._open = None
        if self._inflight is not None:
            task, self._inflight = self._inflight, None
            self._queued.clear()
            await task  # the last one waits for all before it

    async def cancel(self) -> None:
        """Cancel every queued step (after a failed drain: leave nothing running)."""
        for task in (*self._queued, self._inflight):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._queued.clear()
        self._inflight = self._open = None

"""The incidents' adapter: the pure :class:`~cloud_processor.incidents.IncidentBook`
fed by the webhook's feed, its changes stored in ``<prefix>incidents``.

Delivery guarantee of this hop: the feed stores a batch's incident changes
(one document per incident, replaced by each change) before it offers the
notified ones to the webhook, and commits an alerts-topic offset only once
those are resolved; so a crash repeats, never skips. At the next start
:meth:`IncidentLog.restore` rebuilds the book from the stored incidents and
the alerts they list (alert changes read again are then skipped), and offers
again the latest notified change of every open incident and of those
resolved within ``restore_s``: one that went out before the crash arrives
twice, with the same ``incident_id`` + ``version`` (a receiver drops it).
Delivery is not recorded, so this happens at every start, a clean redeploy
included: at-least-once, never exactly-once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final

from cloud_processor.incidents import IncidentBook
from cloud_processor.metrics import Metrics
from cloud_processor.storage import Storage
from telemetry_contract import AlertChange, IncidentChange, IncidentStatus

__all__ = ["RESTORE_S", "IncidentLog"]

log = logging.getLogger(__name__)

#: Resolved incidents changed within this long before a start are loaded
#: (their alerts' changes read again are stale) and their last news re-offered.
RESTORE_S: Final = 3600.0


class IncidentLog:
    """An :class:`IncidentBook`, its index and its metrics."""

    def __init__(
        self,
        book: IncidentBook,
        storage: Storage,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        restore_s: float = RESTORE_S,
    ) -> None:
        self.book = book
        self.storage = storage
        self._metrics = metrics
        self._clock = clock
        self._restore_s = restore_s

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def restore(self, stop: asyncio.Event | None = None) -> list[IncidentChange]:
        """Rebuild the book; returns the changes to offer again (their last news)."""
        since = self._now_ms() - int(self._restore_s * 1000)
        stored = await self.storage.load_incidents(since_ms=since, stop=stop)
        alerts = await self.storage.load_alerts(since_ms=since, stop=stop)
        self.book.restore([c.incident for c in stored], alerts)
        self._gauge()
        again = [c for c in stored if c.notify]
        log.info(
            "event=incidents_restored loaded=%d open=%d renotify=%d",
            len(stored),
            sum(c.incident.status is IncidentStatus.OPEN for c in stored),
            len(again),
        )
        return again

    def apply(self, change: AlertChange) -> list[IncidentChange]:
        """The incident changes one alert change causes."""
        return self.book.apply(change)

    def expire(self) -> list[IncidentChange]:
        """Incidents whose grace has passed by the wall clock."""
        return self.book.expire(self._now_ms())

    async def store(self, changes: Sequence[IncidentChange]) -> None:
        """Write the incidents' documents, in order (retrying while the server is down)."""
        if not changes:
            return
        now = self._now_ms()
        items = [self.storage.incident_item(c, processed_at=now) for c in changes]
        await self.storage.write(items, ordered=True)
        if self._metrics is not None:
            for c in changes:
                self._metrics.incidents.labels(c.kind.value).inc()
        self._gauge()

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.open_incidents.set(len(self.book.open_incidents()))

"""What one write of the chain does: dead letters, readings, alert documents, windows.

Order within a write (the delivery guarantee of :mod:`cloud_processor.app`):
dead letters to Kafka, reading documents, then -- once the batch's alert
changes are published -- the alert documents; only then do the batch's
offsets become committable. Once its readings are stored, their one-minute
windows are folded in memory (:mod:`~cloud_processor.windowfold`) or, when
this process cannot have seen a window whole, marked for recomputation. A
window flush -- a step of the chain too, so it sees exactly the writes
before it -- writes the folded windows from memory and recomputes the marked
ones from the stored readings (:mod:`~cloud_processor.aggregates`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from cloud_processor.aggregates import DirtyWindows, WindowAggregate
from cloud_processor.batches import Prepared
from cloud_processor.chain import PendingWrite
from cloud_processor.documents import BulkItem, reading_id
from cloud_processor.metrics import Metrics
from cloud_processor.notifiers import Notifications
from cloud_processor.offsets import Offsets
from cloud_processor.ports import Partition, Producer, Store
from cloud_processor.rules import FleetRules
from cloud_processor.storage import BulkTotals
from cloud_processor.windowfold import LiveWindows
from telemetry_contract import AlertChange, encode

__all__ = ["Sink"]

log = logging.getLogger(__name__)


class Sink:
    """Stores prepared batches and windows; counts documents and alert changes."""

    def __init__(
        self,
        *,
        storage: Store,
        producer: Producer,
        deadletter_topic: str,
        notifications: Notifications,
        offsets: Offsets,
        rules: FleetRules,
        locations: dict[str, tuple[float, float]],
        metrics: Metrics,
        now_ms: Callable[[], int],
        live: LiveWindows[Partition] | None = None,
    ) -> None:
        self.storage = storage
        self.producer = producer
        self.deadletter_topic = deadletter_topic
        self.notifications = notifications
        self.offsets = offsets
        self.rules = rules
        self.locations = locations
        self.metrics = metrics
        self._now_ms = now_ms
        #: Windows folded in memory (None: every window is recomputed by query) ...
        self.live = live
        #: ... and the windows the next flush recomputes from the stored readings.
        self.requery = DirtyWindows()

    async def write(self, pending: PendingWrite) -> None:
        """Write one step of the chain; its offsets become committable after it."""
        batch = pending.batch
        if batch.dead:
            futures = [
                await self.producer.send(self.deadletter_topic, encode(d)) for d in batch.dead
            ]
            await asyncio.gather(*futures)
        totals = await self.store(batch.readings, batch.changes, pending.notified)
        self._windows(batch, totals)
        self.offsets.written(batch.offsets)

    def _windows(self, batch: Prepared, totals: BulkTotals) -> None:
        """Fold the stored readings' windows, or mark them for the query."""
        live, requery = self.live, self.requery
        rejected, duplicates = totals.rejected_ids, totals.duplicate_ids
        for tp, r in batch.windowed:
            rid = reading_id(r) if rejected or duplicates else ""  # mostly all 201
            if rid in rejected:
                continue  # not stored: in no window
            if live is None:
                requery.add(r.device_id, r.site, r.ts)
            elif rid in duplicates:
                if not live.holds(r.device_id, r.seq, r.ts):
                    live.spoil(r.device_id, r.ts)  # ambiguous: see windowfold
                    requery.add(r.device_id, r.site, r.ts)
            elif (
                tp is None
                or r.temp_c is None
                or not live.fold(tp, r.device_id, r.site, seq=r.seq, ts=r.ts, temp_c=r.temp_c)
            ):
                requery.add(r.device_id, r.site, r.ts)

    async def store(
        self,
        readings: list[BulkItem],
        changes: list[AlertChange],
        notified: asyncio.Task[None] | None = None,
    ) -> BulkTotals:
        """Store readings and alert documents; ``notified`` publishes ``changes``
        (started when the batch was prepared; published here when None).
        Returns what the readings' bulk requests did."""
        totals = BulkTotals()
        if readings:
            totals = await self.storage.write(readings)
            self._count("readings", totals)
        if not changes:
            return totals
        latest: dict[str, AlertChange] = {}
        for c in changes:
            latest[c.alert.alert_id] = c
        now_ms = self._now_ms()
        items = [
            self.storage.alert_item(
                c.alert, self.locations.get(c.alert.device_id), processed_at=now_ms
            )
            for c in latest.values()
        ]
        # Notify first, then store: a crash in between repeats a notification
        # (same alert_id and version, receivers can drop it) instead of losing
        # it, because state rebuilt from the index would consider it sent.
        if notified is not None:
            await notified
        else:
            await self.notifications.notify(changes)
        self._count("alerts", await self.storage.write(items, ordered=True))
        for c in changes:
            self.metrics.alerts.labels(c.kind.value, c.alert.rule).inc()
            log.info(
                "event=alert_%s alert_id=%s version=%d severity=%s late=%s notify=%s",
                c.kind.value,
                c.alert.alert_id,
                c.alert.version,
                c.alert.severity.value,
                c.alert.late,
                c.notify,
            )
        self.metrics.active_alerts.set(self.rules.book.open_count)
        return totals

    async def write_windows(self) -> None:
        """Write the windows folded since the last flush, and recompute the
        marked ones from the stored readings (both replace their documents).

        Windows of a partition taken over are seeded first with their stored
        documents (see :mod:`~cloud_processor.windowfold`)."""
        windows: list[WindowAggregate] = []
        if self.live is not None:
            if wanted := self.live.unseeded():
                stored = await self.storage.load_windows(wanted)
                for device_id, site, start in self.live.seed(stored):
                    self.requery.add(device_id, site, start)
            windows = self.live.take_changed()
        dirty, self.requery = self.requery, DirtyWindows()
        if len(dirty):
            windows += await self.storage.compute_windows(dirty)
        if self.live is not None:
            self.live.evict(self._now_ms())
        if windows:
            items = self.storage.aggregate_items(windows, dict(self.locations))
            self._count("agg1m", await self.storage.write(items))

    def _count(self, index: str, totals: BulkTotals) -> None:
        docs = self.metrics.docs
        docs.labels(index, "stored").inc(totals.stored)
        docs.labels(index, "duplicate").inc(totals.duplicates)
        docs.labels(index, "rejected").inc(totals.rejected)

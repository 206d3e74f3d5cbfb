"""What one write of the chain does: dead letters, readings, alert documents, windows.

Order within a write (the delivery guarantee of :mod:`cloud_processor.app`):
dead letters to Kafka, reading documents, then -- once the batch's alert
changes are published -- the alert documents; only then do the batch's
offsets become committable. Window flushes recompute the dirty one-minute
windows from the stored readings and replace their documents.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from cloud_processor.aggregates import DirtyWindows
from cloud_processor.chain import PendingWrite
from cloud_processor.documents import BulkItem
from cloud_processor.metrics import Metrics
from cloud_processor.notifiers import Notifications
from cloud_processor.offsets import Offsets
from cloud_processor.ports import Producer, Store
from cloud_processor.rules import FleetRules
from cloud_processor.storage import BulkTotals
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

    async def write(self, pending: PendingWrite) -> None:
        """Write one step of the chain; its offsets become committable after it."""
        batch = pending.batch
        if batch.dead:
            futures = [
                await self.producer.send(self.deadletter_topic, encode(d)) for d in batch.dead
            ]
            await asyncio.gather(*futures)
        await self.store(batch.readings, batch.changes, pending.notified)
        self.offsets.written(batch.offsets)

    async def store(
        self,
        readings: list[BulkItem],
        changes: list[AlertChange],
        notified: asyncio.Task[None] | None = None,
    ) -> None:
        """Store readings and alert documents; ``notified`` publishes ``changes``
        (started when the batch was prepared; published here when None)."""
        if readings:
            self._count("readings", await self.storage.write(readings))
        if not changes:
            return
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

    async def write_windows(self, dirty: DirtyWindows) -> None:
        """Recompute the dirty windows from the stored readings and store them."""
        if not len(dirty):
            return
        windows = await self.storage.compute_windows(dirty)
        items = self.storage.aggregate_items(windows, dict(self.locations))
        self._count("agg1m", await self.storage.write(items))

    def _count(self, index: str, totals: BulkTotals) -> None:
        docs = self.metrics.docs
        docs.labels(index, "stored").inc(totals.stored)
        docs.labels(index, "duplicate").inc(totals.duplicates)
        docs.labels(index, "rejected").inc(totals.rejected)

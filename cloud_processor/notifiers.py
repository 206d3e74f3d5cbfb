"""Alert publication: every notifier, in order, batch after batch.

:class:`Notifications` publishes each batch's alert changes through the
configured notifiers (:class:`~cloud_processor.ports.Notifier`), one after
the other in their order (by default the Kafka alerts topic only), on one
ordered chain: a batch's changes go out only after those of the batches
before it, yet without waiting for any bulk write. The write of a batch waits
for its notifications before storing its alert documents, so a crash in
between repeats a change on the alerts topic instead of losing it. The
webhook reads them back from there (:mod:`cloud_processor.feed`, started by
:meth:`Notifications.start`), never on this chain.

:class:`AlertsTopicNotifier` is the Kafka one: every change, late ones
included, in the contract's wire form, keyed by device.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from cloud_processor.ports import Notifier, Producer
from telemetry_contract import AlertChange, encode_alert_change, kafka_key

__all__ = ["AlertsTopicNotifier", "Notifications"]


class AlertsTopicNotifier:
    """Publishes alert changes to the Kafka alerts topic (a :class:`Notifier`).

    Keyed by device, so one device's changes stay in order; returns once
    Kafka has them all (acks=all). The producer is the processor's: it is
    started and stopped there, not here.
    """

    def __init__(self, producer: Producer, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    async def notify(self, changes: Sequence[AlertChange]) -> None:
        """Send every change, then wait until Kafka has them."""
        futures = [
            await self._producer.send(
                self.topic, encode_alert_change(c), key=kafka_key(c.alert.device_id)
            )
            for c in changes
        ]
        await asyncio.gather(*futures)

    async def close(self) -> None:
        """Nothing to release (the processor stops the producer)."""


class Notifications:
    """The ordered chain that publishes alert changes through ``notifiers``."""

    def __init__(self, notifiers: Sequence[Notifier]) -> None:
        self.notifiers = tuple(notifiers)
        self._last: asyncio.Task[None] | None = None

    def publish(self, changes: list[AlertChange]) -> asyncio.Task[None] | None:
        """Start publishing ``changes`` after the changes published before them."""
        if not changes:
            return None
        self._last = asyncio.create_task(self._after(self._last, changes))
        return self._last

    async def _after(self, prev: asyncio.Task[None] | None, changes: list[AlertChange]) -> None:
        if prev is not None:
            await prev  # a failure there fails this one too: the batch is not committed
        await self.notify(changes)

    async def notify(self, changes: Sequence[AlertChange]) -> None:
        """Publish ``changes`` through every notifier, in order, now."""
        for notifier in self.notifiers:
            await notifier.notify(changes)

    async def start(self) -> None:
        """Start the notifiers that run on their own (those with a ``start``)."""
        for notifier in self.notifiers:
            start = getattr(notifier, "start", None)
            if start is not None:
                await start()

    async def cancel(self) -> None:
        """Stop publishing (after a failed drain: leave nothing running)."""
        task, self._last = self._last, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def close(self) -> None:
        """Close every notifier (idempotent)."""
        for notifier in self.notifiers:
            await notifier.close()
